"""Bradley-Terry pairwise loss for reward-model training.

Ouyang et al. 2022 ("InstructGPT"), eq. 1: loss = -log σ(r(x, y_c) - r(x, y_r)),
with the optional preference-strength margin m of Touvron et al. 2023 (Llama 2):
-log σ(r_c - r_r - m).

Departures from the papers:
- InstructGPT averages over all C(K, 2) comparisons of a prompt in one batch
  element; here each row is one pair and the loss is the plain batch mean.
- Accuracy ignores the margin: it is the fraction of pairs ranked correctly
  (strict s_c > s_r; ties count as wrong).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bradley_terry_loss"]


def bradley_terry_loss(
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    margin: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise Bradley-Terry negative log-likelihood.

    Args:
        chosen_scores: [B] reward of the preferred response.
        rejected_scores: [B] reward of the other response.
        margin: optional [B] tensor or scalar m, subtracted inside the sigmoid.

    Returns:
        (0-dim mean loss, 0-dim detached accuracy).
    """
    if chosen_scores.shape != rejected_scores.shape:
        raise ValueError(
            f"chosen_scores {tuple(chosen_scores.shape)} and rejected_scores "
            f"{tuple(rejected_scores.shape)} differ in shape"
        )
    diff = chosen_scores - rejected_scores
    logits = diff if margin is None else diff - margin
    # -log σ(x) = softplus(-x), stable for large |x|.
    loss = F.softplus(-logits).mean()
    accuracy = (diff.detach() > 0).to(chosen_scores.dtype).mean()
    return loss, accuracy
