"""DAPO's overlong handling (Yu et al. 2025, "DAPO", section 3.4): responses cut at the length
limit carry a reward that judges a truncated answer, which is noise; filter them out of the loss,
or shape the reward with a soft penalty that grows over the last `buffer` tokens before the limit.

R_length(L) = 0 for L ≤ L_max - buffer, -penalty · (L - (L_max - buffer)) / buffer inside the
buffer (reaching -penalty at L = L_max). Departure: DAPO's extra -1 for L > L_max never applies,
because the engines stop at `rollout.max_new_tokens`; such responses are "truncated" instead.
"""
from __future__ import annotations

import torch

__all__ = ["overlong_penalty", "truncated_rows"]


def overlong_penalty(lengths: torch.Tensor, max_new_tokens: int, buffer: int, penalty: float) -> torch.Tensor:
    """The soft length penalty added to each sequence's score.

    Args:
        lengths: [B] response lengths in tokens (EOS included).
        max_new_tokens: L_max.
        buffer: the length of the penalised zone before L_max (≥ 1; 0 disables the penalty).
        penalty: the penalty at L = L_max (≥ 0).

    Returns:
        [B] float, ≤ 0.
    """
    lengths = lengths.float()
    if buffer <= 0 or penalty == 0:
        return torch.zeros_like(lengths)
    start = max_new_tokens - buffer
    over = (lengths - start).clamp(min=0, max=buffer)
    return -penalty * over / buffer


def truncated_rows(response_mask: torch.Tensor, ended: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """[B] bool: responses that reached the length limit without ending by themselves.

    Args:
        response_mask: [B, R], 1 on generated tokens (EOS included).
        ended: [B] bool, whether the engine stopped the row on EOS or a stop string.
        max_new_tokens: the engines' length limit.
    """
    return (response_mask.sum(dim=1) >= max_new_tokens) & ~ended.bool()
