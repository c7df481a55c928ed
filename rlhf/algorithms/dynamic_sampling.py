"""DAPO's dynamic sampling (Yu et al. 2025, "DAPO", section 3.2): a prompt group whose samples all
scored the same has zero group-relative advantage and only dilutes the batch, so it is dropped and
more prompts are generated until the step's batch is full again.

Departures: at most `algorithm.max_resample_rounds` extra rounds per step; when the batch is still
short, the step trains on what it has and fills the remaining rows with dropped groups whose loss
mask is zeroed (the trainers' mini-batch shapes stay fixed; those rows train nothing). Groups with
fewer than two finite scores count as uninformative.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from rlhf.records import RolloutBatch


@dataclass
class ScoredRollout:
    """A rollout with what the experience phase computed for it, row for row."""

    rollout: RolloutBatch
    logprobs: torch.Tensor
    """[B, R] old log-probs."""
    ref_logprobs: torch.Tensor
    """[B, R]"""
    values: Optional[torch.Tensor]
    """[B, R] or None without a critic."""
    scores: torch.Tensor
    """[B]"""


def informative_groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B / group_size] bool: the group's finite scores are not all equal (and there are at least two).

    Args:
        scores: [B] sequence scores, consecutive groups of `group_size` samples of one prompt.
    """
    groups = scores.view(-1, group_size)
    finite = torch.isfinite(groups)
    big = torch.finfo(groups.dtype).max
    high = torch.where(finite, groups, torch.full_like(groups, -big)).amax(dim=1)
    low = torch.where(finite, groups, torch.full_like(groups, big)).amin(dim=1)
    return (finite.sum(dim=1) >= 2) & (high > low)


def _pad_right(t: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, width - t.shape[1]))


def concat_scored(parts: list[ScoredRollout], pad_id: int) -> ScoredRollout:
    """One batch from several: prompt blocks left-padded and response blocks right-padded to the widest."""
    prompt_len = max(p.rollout.prompt_len for p in parts)
    width = max(p.rollout.response_mask.shape[1] for p in parts)
    seqs, attns = [], []
    for p in parts:
        r = p.rollout
        left, right = prompt_len - r.prompt_len, width - r.response_mask.shape[1]
        seqs.append(torch.nn.functional.pad(r.sequences, (left, right), value=pad_id))
        attns.append(torch.nn.functional.pad(r.attention_mask, (left, right)))
    cat = lambda name: torch.cat([_pad_right(getattr(p.rollout, name), width) for p in parts])  # noqa: E731
    rollout = replace(parts[0].rollout, sequences=torch.cat(seqs), attention_mask=torch.cat(attns),
                      response_mask=cat("response_mask"), rollout_logprobs=cat("rollout_logprobs"),
                      prompt_len=prompt_len, prompts=sum((p.rollout.prompts for p in parts), []),
                      responses=sum((p.rollout.responses for p in parts), []),
                      prompt_index=sum((p.rollout.prompt_index for p in parts), []))
    values = None if parts[0].values is None else torch.cat([_pad_right(p.values, width) for p in parts])
    return ScoredRollout(rollout, torch.cat([_pad_right(p.logprobs, width) for p in parts]),
                         torch.cat([_pad_right(p.ref_logprobs, width) for p in parts]), values,
                         torch.cat([p.scores for p in parts]))


def select_rows(batch: ScoredRollout, rows: torch.Tensor, zero_mask: torch.Tensor) -> ScoredRollout:
    """The rows `rows` in that order; rows where `zero_mask` is set keep no response-mask (train nothing)."""
    r = batch.rollout
    mask = r.response_mask[rows] * (~zero_mask).unsqueeze(1).to(r.response_mask.dtype)
    rollout = replace(r, sequences=r.sequences[rows], attention_mask=r.attention_mask[rows], response_mask=mask,
                      rollout_logprobs=r.rollout_logprobs[rows], prompts=[r.prompts[i] for i in rows.tolist()],
                      responses=[r.responses[i] for i in rows.tolist()],
                      prompt_index=[r.prompt_index[i] for i in rows.tolist()])
    return ScoredRollout(rollout, batch.logprobs[rows], batch.ref_logprobs[rows],
                         None if batch.values is None else batch.values[rows], batch.scores[rows])


def fill_with_informative_groups(first: ScoredRollout, more: Callable[[int], ScoredRollout], group_size: int,
                                 max_rounds: int, pad_id: int) -> tuple[ScoredRollout, dict]:
    """Drop uninformative groups, calling `more(round)` for fresh ones until the batch is full again.

    Returns the batch, as many rows as `first`, informative groups first (in arrival order), and the
    metrics sampling/filtered_groups (groups dropped over all rounds), sampling/rounds (extra rounds run)
    and sampling/trained_groups (informative groups trained on).
    """
    wanted = len(first.rollout) // group_size
    parts, rounds = [first], 0
    kept = int(informative_groups(first.scores, group_size).sum())
    while kept < wanted and rounds < max_rounds:
        rounds += 1
        parts.append(more(rounds))
        kept += int(informative_groups(parts[-1].scores, group_size).sum())
    batch = concat_scored(parts, pad_id) if len(parts) > 1 else first
    good = informative_groups(batch.scores, group_size)
    order = torch.cat([good.nonzero().flatten(), (~good).nonzero().flatten()])[:wanted]
    trained = order[: int(good.sum())]
    rows = (order.unsqueeze(1) * group_size + torch.arange(group_size)).flatten()
    filler = ~good[order].repeat_interleave(group_size)
    metrics = {"sampling/filtered_groups": int((~good).sum()), "sampling/rounds": rounds,
               "sampling/trained_groups": len(trained)}
    return select_rows(batch, rows, filler), metrics


RESAMPLE_SEED_STRIDE = 1_000_000
"""Round r of step s samples with the seed of step s + r * stride, so no two rounds repeat a seed."""


def min_trained_group_std(scores: torch.Tensor, response_mask: torch.Tensor, group_size: int) -> float:
    """The smallest score spread (population std) over the groups that train (any response token in the
    loss): what proves no zero-variance group reached the update; NaN when none trains."""
    trains = response_mask.sum(dim=1).view(-1, group_size).sum(dim=1) > 0
    groups = scores.view(-1, group_size)[trains]
    return float(groups.std(dim=1, unbiased=False).min()) if len(groups) else float("nan")


def dynamic_sampling_round(group_size: int, max_rounds: int, pad_id: int, rollout: RolloutBatch, experience: tuple,
                           generate_more: Callable[[int], RolloutBatch],
                           make_experience: Callable[[RolloutBatch], tuple]) -> tuple[RolloutBatch, tuple, dict]:
    """The PPO step's call: (rollout, (logprobs, ref_logprobs, values, scores), metrics) after dynamic
    sampling; `generate_more(round)` generates a fresh prompt batch, `make_experience` scores it."""
    def more(round_: int) -> ScoredRollout:
        extra = generate_more(round_)
        return ScoredRollout(extra, *make_experience(extra))

    batch, metrics = fill_with_informative_groups(ScoredRollout(rollout, *experience), more, group_size,
                                                  max_rounds, pad_id)
    metrics["sampling/min_trained_group_std"] = min_trained_group_std(batch.scores, batch.rollout.response_mask,
                                                                      group_size)
    return batch.rollout, (batch.logprobs, batch.ref_logprobs, batch.values, batch.scores), metrics
