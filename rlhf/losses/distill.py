"""Per-token divergences between a student and a teacher distribution, for knowledge distillation.

Hinton et al. 2015 distil by matching the teacher's (temperature-softened) distribution with the
forward KL, KL(teacher || student): mode-covering. Agarwal et al. 2024 ("On-policy distillation of
language models", GKD) evaluate it on the student's own samples and also use the reverse KL,
KL(student || teacher), mode-seeking, and the generalised Jensen-Shannon divergence

    JSD(beta) = beta * KL(T || M) + (1 - beta) * KL(S || M),   M = beta * T + (1 - beta) * S,

which interpolates: JSD(beta) / beta -> KL(T || S) as beta -> 0 and JSD(beta) / (1 - beta) ->
KL(S || T) as beta -> 1 (both endpoints are 0 themselves, so beta is kept inside (0, 1) and the
two KLs are their own choices). beta = 0.5 is the symmetric Jensen-Shannon divergence.

Departures:
- Every divergence is over the full vocabulary at each position (the tiny vocabulary allows it);
  no top-k truncation of the teacher.
- The loss is the token mean over the batch's response positions (like `sft_loss`), and a batch
  with no response token gives 0 (not NaN).
- `temperature` softens both distributions (logits / T); GKD's T^2 gradient rescaling is left out:
  the learning rate absorbs it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from rlhf.masked import masked_mean

__all__ = ["DISTILL_DIVERGENCES", "DistillStats", "distill_loss", "forward_kl", "generalized_jsd", "reverse_kl",
           "softened_logprobs", "token_divergence"]


def softened_logprobs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) over the last dim, in float32 ([..., V] -> [..., V]).

    Log-probs are accepted as `logits` too: they differ from the logits by a per-position constant,
    which the softmax removes, so a teacher can send log-probs and still be softened here.
    """
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def _kl(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) over the last dim; inputs are finite log-probs [..., V]."""
    return (p_logprobs.exp() * (p_logprobs - q_logprobs)).sum(dim=-1)


def forward_kl(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per position: [..., V] log-probs each -> [...]."""
    return _kl(teacher_logprobs, student_logprobs)


def reverse_kl(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(student || teacher) per position: [..., V] log-probs each -> [...]."""
    return _kl(student_logprobs, teacher_logprobs)


def generalized_jsd(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """beta * KL(T || M) + (1 - beta) * KL(S || M) with M = beta * T + (1 - beta) * S, per position.

    [..., V] log-probs each -> [...]; beta in (0, 1). The mixture is formed in log space
    (logsumexp), so no probability underflows to a log of 0.
    """
    if not 0 < beta < 1:
        raise ValueError(f"jsd beta must be in (0, 1), got {beta}")
    mixture = torch.logsumexp(torch.stack([teacher_logprobs + math.log(beta),
                                           student_logprobs + math.log(1 - beta)]), dim=0)
    return beta * _kl(teacher_logprobs, mixture) + (1 - beta) * _kl(student_logprobs, mixture)


DISTILL_DIVERGENCES: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": lambda s, t, beta: forward_kl(s, t),
    "reverse_kl": lambda s, t, beta: reverse_kl(s, t),
    "jsd": generalized_jsd,
}
"""`algorithm.distill.divergence` -> fn(student_logprobs, teacher_logprobs, beta) -> per-position divergence."""


def token_divergence(student_logits: torch.Tensor, teacher_logprobs: torch.Tensor, divergence: str,
                     beta: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """The named divergence at every position, [B, R, V] each -> [B, R], both softened by `temperature`."""
    if divergence not in DISTILL_DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {', '.join(DISTILL_DIVERGENCES)}")
    if student_logits.shape != teacher_logprobs.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher log-probs "
                         f"{tuple(teacher_logprobs.shape)} differ (same tokenizer and vocabulary size needed)")
    student = softened_logprobs(student_logits, temperature)
    teacher = softened_logprobs(teacher_logprobs, temperature)
    return DISTILL_DIVERGENCES[divergence](student, teacher, beta)


@dataclass
class DistillStats:
    """Detached token means of both KLs (whatever the loss), to compare runs across divergences."""

    forward_kl: float
    reverse_kl: float
    tokens: int


def distill_loss(student_logits: torch.Tensor, teacher_logprobs: torch.Tensor, mask: torch.Tensor, divergence: str,
                 beta: float = 0.5, temperature: float = 1.0) -> tuple[torch.Tensor, DistillStats]:
    """Token mean of the divergence over the positions where `mask` is 1.

    Args:
        student_logits: [B, R, V], position r predicting response token r (differentiable).
        teacher_logprobs: [B, R, V] the teacher's log-probs (or logits) at the same positions.
        mask: [B, R], 1 on response tokens, 0 on padding.
        divergence: forward_kl, reverse_kl or jsd; beta: the JSD mixture weight; temperature: softening.

    Returns:
        (0-dim loss, DistillStats of the same positions).
    """
    per_token = token_divergence(student_logits, teacher_logprobs, divergence, beta, temperature)
    loss = masked_mean(per_token, mask)
    with torch.no_grad():
        student = softened_logprobs(student_logits.detach(), temperature)
        teacher = softened_logprobs(teacher_logprobs, temperature)
        stats = DistillStats(float(masked_mean(forward_kl(student, teacher), mask)),
                             float(masked_mean(reverse_kl(student, teacher), mask)), int(mask.sum()))
    return loss, stats
