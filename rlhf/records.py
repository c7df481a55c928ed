"""Typed records that cross actor boundaries.

Layout of every batch: `sequences` is [B, P + R], a left-padded prompt block of
width P followed by a right-padded response block of width R. Response-level
tensors are [B, R] and line up with `sequences[:, P:]`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch


@dataclass
class RolloutBatch:
    """What the rollout engines produce for one step."""

    sequences: torch.Tensor
    """[B, P+R] long: prompt tokens (left-padded) then response tokens (right-padded)."""
    attention_mask: torch.Tensor
    """[B, P+R] long: 1 on real tokens."""
    response_mask: torch.Tensor
    """[B, R] float: 1 on generated tokens, including the EOS that ended a response."""
    rollout_logprobs: torch.Tensor
    """[B, R] float: the engine's log-probs of its sampled tokens (unprocessed distribution)."""
    prompt_len: int
    """P, the width of the prompt block."""
    prompts: list[str]
    """B prompt texts as the engine saw them (chat template applied)."""
    responses: list[str]
    """B decoded responses, special tokens stripped."""
    prompt_index: list[int]
    """B dataset row of each prompt; samples of one prompt are consecutive."""
    policy_version: int
    """The policy step whose weights generated this batch."""

    def __len__(self) -> int:
        return self.sequences.shape[0]


@dataclass
class Experience:
    """A scored rollout with everything PPO needs; split into mini-batches for training."""

    sequences: torch.Tensor
    """[B, P+R]"""
    attention_mask: torch.Tensor
    """[B, P+R]"""
    response_mask: torch.Tensor
    """[B, R]"""
    old_logprobs: torch.Tensor
    """[B, R] policy log-probs at generation time (recomputed by the trainer)."""
    advantages: torch.Tensor
    """[B, R]"""
    returns: torch.Tensor
    """[B, R] value targets (zeros when there is no critic)."""
    old_values: Optional[torch.Tensor]
    """[B, R] critic values at generation time, None without a critic."""
    prompt_len: int

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def select(self, index: torch.Tensor | slice) -> "Experience":
        """The rows at `index`, as a new Experience (tensors indexed, ints kept)."""
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            picked[f.name] = value[index] if isinstance(value, torch.Tensor) else value
        return replace(self, **picked)

    def split(self, parts: int) -> list["Experience"]:
        """`parts` equal contiguous shards (data-parallel replicas)."""
        size = len(self) // parts
        return [self.select(slice(i * size, (i + 1) * size)) for i in range(parts)]


@dataclass
class TrainStats:
    """Per-step means reported by a trainer replica."""

    values: dict[str, float]
    """Namespaced metric -> value, e.g. {"policy/loss": 0.1}."""
    count: int
    """Micro-batches the means are over (for averaging across replicas)."""

    @staticmethod
    def merge(stats: list["TrainStats"]) -> dict[str, float]:
        total = sum(s.count for s in stats) or 1
        keys = {k for s in stats for k in s.values}
        return {k: sum(s.values.get(k, 0.0) * s.count for s in stats) / total for k in sorted(keys)}
