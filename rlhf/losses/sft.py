"""Supervised fine-tuning loss: next-token cross-entropy on response tokens only.

Ouyang et al. 2022 ("InstructGPT") §3.5: the SFT model is trained on demonstrations with
the language-modelling objective; as is now standard the prompt tokens are not predicted
(their labels are -100), so the model learns to answer, not to write prompts.

Departures:
- The mean is over the labelled tokens of the whole (micro-)batch ("token mean"), not
  per-sequence means, so long responses weigh more, as in most SFT trainers.
- A batch with no labelled token gives a loss of 0 (not NaN), so a padding-only
  micro-batch contributes nothing instead of poisoning the step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["IGNORE_INDEX", "sft_loss"]

IGNORE_INDEX = -100
"""Label of a token that is not trained on (prompt, padding): torch's cross-entropy default."""


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean negative log-likelihood of the labelled tokens.

    Args:
        logits: [B, T, V]; position t predicts token t + 1.
        labels: [B, T] long, the token at each position or IGNORE_INDEX.

    Returns:
        (0-dim loss, number of labelled tokens that were predicted).
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shifted_labels = labels[:, 1:].reshape(-1)
    n_tokens = int((shifted_labels != IGNORE_INDEX).sum())
    if n_tokens == 0:
        return logits.sum() * 0.0, 0
    loss = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss / n_tokens, n_tokens
