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

from rlhf.losses.distill import forward_kl

__all__ = ["IGNORE_INDEX", "reference_kl_loss", "sft_loss"]

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


def reference_kl_loss(logits: torch.Tensor, reference_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the labelled next-token positions of KL(reference || model), over the full vocabulary.

    The anchor of a pre-training mix that must not be memorised: its optimum is the reference's own
    predictions, whatever the rows say, so rehearsing a small corpus holds the model where it was on
    text of that kind instead of fitting those rows. Positions as in `sft_loss` (position t predicts
    token t + 1; labels IGNORE_INDEX are left out); 0 when nothing is labelled.
    """
    if logits.shape != reference_logits.shape or logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, reference logits {tuple(reference_logits.shape)} and "
                         f"labels {tuple(labels.shape)} do not match")
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    reference_logprobs = torch.log_softmax(reference_logits[:, :-1].float(), dim=-1)
    per_position = forward_kl(logprobs, reference_logprobs)
    labelled = labels[:, 1:] != IGNORE_INDEX
    if not labelled.any():
        return logits.sum() * 0.0
    return per_position[labelled].mean()
