"""Typed records that cross actor boundaries.

Layout of every batch: `sequences` is [B, P + R], a left-padded prompt block of
width P followed by a right-padded response block of width R. Response-level
tensors are [B, R] and line up with `sequences[:, P:]`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Optional

import torch


def _on_device(record, device):
    """A copy of a record with every tensor field, and every nested record, on `device` (no copy for
    tensors already there)."""
    moved = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if isinstance(value, torch.Tensor) or (is_dataclass(value) and hasattr(value, "to")):
            moved[f.name] = value.to(device)
    return replace(record, **moved)


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
    columns: list[dict] = field(default_factory=list)
    """B dicts: the other fields of each sample's data row (empty when the caller passed none)."""
    episodes: Optional["EpisodeOutcome"] = None
    """Multi-turn rollouts (`rollout.env`): the environments' side of the batch; None for single turn."""

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def to(self, device: torch.device | str) -> "RolloutBatch":
        """The same record with its tensors on `device` (actors move inputs in, results back to the CPU)."""
        return _on_device(self, device)


@dataclass
class EpisodeOutcome:
    """What the environments of a multi-turn batch reported (rlhf.rollout.episodes)."""

    rewards: torch.Tensor
    """[B] float: each episode's summed step rewards."""
    metrics: dict[str, float]
    """episode/* metrics of the batch."""
    transcripts: list[list[dict]]
    """B transcripts after the prompt: {"role", "content"} per turn."""

    def to(self, device: torch.device | str) -> "EpisodeOutcome":
        return _on_device(self, device)


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
    rollout_logprobs: Optional[torch.Tensor] = None
    """[B, R] the engine's log-probs of its samples (importance correction, mismatch metrics)."""
    ref_logprobs: Optional[torch.Tensor] = None
    """[B, R] reference log-probs, when the KL is a loss term (algorithm.kl.placement: loss)."""
    kl_coef: float = 0.0
    """β of the KL loss term this step (the controller's value when the experience was made)."""
    old_from_rollout: bool = False
    """`old_logprobs` are the engine's: the importance correction then compares with the trainer's current ones."""
    loss_denominator: Optional[float] = None
    """The whole mini-batch's aggregation denominator (rlhf.losses.loss_denominator), None: each micro-batch's own."""
    loss_parts: int = 1
    """Micro-batches over all replicas whose losses DeepSpeed averages for one optimizer step."""

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def to(self, device: torch.device | str) -> "Experience":
        """The same record with its tensors on `device` (actors move inputs in, results back to the CPU)."""
        return _on_device(self, device)

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


def _select_rows(record, index):
    """A copy of a record with its tensors indexed by row (ints kept)."""
    picked = {f.name: (getattr(record, f.name)[index] if isinstance(getattr(record, f.name), torch.Tensor)
                       else getattr(record, f.name)) for f in fields(record)}
    return replace(record, **picked)


def _split_rows(record, parts: int) -> list:
    size = len(record) // parts
    return [record.select(slice(i * size, (i + 1) * size)) for i in range(parts)]


@dataclass
class SFTBatch:
    """Supervised fine-tuning rows, right-padded; a packed row holds several examples."""

    input_ids: torch.Tensor
    """[B, T] long."""
    labels: torch.Tensor
    """[B, T] long: the token where it is trained on, -100 elsewhere (prompt, padding)."""
    position_ids: torch.Tensor
    """[B, T] long: restarting at 0 for each packed example."""
    segment_ids: torch.Tensor
    """[B, T] long: 1, 2, ... for the examples packed in a row, 0 on padding."""

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> "SFTBatch":
        """The same record with its tensors on `device` (actors move inputs in, results back to the CPU)."""
        return _on_device(self, device)

    def select(self, index) -> "SFTBatch":
        return _select_rows(self, index)

    def split(self, parts: int) -> list["SFTBatch"]:
        return _split_rows(self, parts)

    def weight(self) -> int:
        """Tokens the loss averages over (labelled tokens that have a predecessor)."""
        return int((self.labels[:, 1:] != -100).sum())


@dataclass
class PreferenceBatch:
    """Prompt with a chosen and a rejected response; both blocks share P and R.

    Rows of `chosen_*` and `rejected_*` line up pair by pair: [left-padded prompt | right-padded response].
    """

    chosen: torch.Tensor
    """[B, P+R] long."""
    chosen_attention_mask: torch.Tensor
    """[B, P+R] long."""
    chosen_response_mask: torch.Tensor
    """[B, R] float: 1 on response tokens."""
    rejected: torch.Tensor
    rejected_attention_mask: torch.Tensor
    rejected_response_mask: torch.Tensor
    pair_weight: torch.Tensor
    """[B] float: 1 for a real pair, 0 for padding that keeps replicas' micro-batch counts equal."""
    ref_chosen_logps: Optional[torch.Tensor]
    """[B] summed reference log-probs of the chosen response (None when the loss needs no reference)."""
    ref_rejected_logps: Optional[torch.Tensor]
    prompt_len: int

    def __len__(self) -> int:
        return self.chosen.shape[0]

    def to(self, device: torch.device | str) -> "PreferenceBatch":
        """The same record with its tensors on `device` (actors move inputs in, results back to the CPU)."""
        return _on_device(self, device)

    def select(self, index) -> "PreferenceBatch":
        return _select_rows(self, index)

    def split(self, parts: int) -> list["PreferenceBatch"]:
        return _split_rows(self, parts)

    def weight(self) -> int:
        return int(self.pair_weight.sum())


@dataclass
class DistillBatch:
    """Responses with the teacher's full distribution at every response position (distill mode)."""

    sequences: torch.Tensor
    """[B, P+R] long: left-padded prompt, right-padded response (the student's samples)."""
    attention_mask: torch.Tensor
    """[B, P+R] long."""
    response_mask: torch.Tensor
    """[B, R] float: 1 on response tokens; padding rows are all 0."""
    teacher_logprobs: torch.Tensor
    """[B, R, V] float: the teacher's log-probs over the vocabulary for each response token's position."""
    prompt_len: int

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def to(self, device: torch.device | str) -> "DistillBatch":
        """The same record with its tensors on `device` (actors move inputs in, results back to the CPU)."""
        return _on_device(self, device)

    def select(self, index) -> "DistillBatch":
        return _select_rows(self, index)

    def split(self, parts: int) -> list["DistillBatch"]:
        return _split_rows(self, parts)

    def weight(self) -> int:
        """Response tokens the divergence averages over."""
        return int(self.response_mask.sum())

    def padded_to(self, size: int) -> "DistillBatch":
        """Filled up to `size` rows with copies of the first row whose response mask is 0 (weight 0), so
        data-parallel replicas run equal micro-batch counts."""
        extra = size - len(self)
        if extra < 0:
            raise ValueError(f"cannot pad {len(self)} rows to {size}")
        first = self.select(slice(0, 1))
        filler = replace(first, response_mask=torch.zeros_like(first.response_mask))
        parts = [self] + [filler] * extra
        return DistillBatch(*(torch.cat([getattr(p, name) for p in parts])
                              for name in ("sequences", "attention_mask", "response_mask", "teacher_logprobs")),
                            prompt_len=self.prompt_len)
