"""Preference pairs from scored samples (online DPO / RLAIF) and win-rates.

Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback";
Xu et al. 2023 "Some things are more CRINGE than others" for best-vs-worst): sample
several responses per prompt, let a judge score them, train DPO on (best, worst).

Departures:
- A prompt whose samples all tie (or whose best or worst score is NaN/inf) gives no pair:
  a pair without a preference teaches nothing, and an invalid score is never guessed.
- Ties in the win-rate count half, the usual convention of pairwise evaluations.
"""
from __future__ import annotations

import math

import torch

__all__ = ["best_worst_pairs", "win_rate"]


def best_worst_pairs(scores: torch.Tensor, group_size: int) -> list[tuple[int, int]]:
    """(chosen, rejected) row indices, at most one pair per group of consecutive samples.

    Args:
        scores: [G * group_size] judge scores; rows g*group_size .. (g+1)*group_size-1 share a prompt.
        group_size: samples per prompt, >= 2.

    Returns:
        For each group with a strict best and worst among its finite scores: (argmax, argmin)
        as indices into `scores` (the first one on ties). Groups with any non-finite score are skipped.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2, got {group_size}")
    if scores.dim() != 1 or scores.numel() % group_size:
        raise ValueError(f"scores must be [G * {group_size}], got {tuple(scores.shape)}")
    pairs = []
    for g, group in enumerate(scores.view(-1, group_size)):
        if not bool(torch.isfinite(group).all()):
            continue
        best, worst = int(group.argmax()), int(group.argmin())
        if group[best] > group[worst]:
            pairs.append((g * group_size + best, g * group_size + worst))
    return pairs


def win_rate(candidate: list[float], baseline: list[float]) -> float:
    """Fraction of prompts where `candidate` scores above `baseline` (ties count 1/2).

    Pairs where either score is NaN/inf are left out; with none left the rate is NaN.
    """
    if len(candidate) != len(baseline):
        raise ValueError(f"{len(candidate)} candidate scores but {len(baseline)} baseline scores")
    points = [1.0 if c > b else 0.5 if c == b else 0.0
              for c, b in zip(candidate, baseline) if math.isfinite(c) and math.isfinite(b)]
    return sum(points) / len(points) if points else float("nan")
