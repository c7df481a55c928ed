"""Padding-trimmed micro-batches, and length-sorted ones for forwards.

A step's rows are [left-padded prompt | right-padded response] at the width of the longest row
in the whole batch. Each micro-batch is trimmed to the columns that hold a real token in at least
one of its rows. Trimming is exact: position ids come from the attention mask and attention is
causal, so columns that are padding in every row change nothing for the real tokens.

Forwards (old, reference and value passes) also sort rows by length first, so long rows share
micro-batches with long rows; their outputs are per row, so the grouping changes nothing.
Training keeps the arrival order. The policy loss divides by the whole mini-batch's count
(rlhf.algorithms.ppo_losses.with_loss_denominator), so its grouping would not matter, but the critic's
value loss and the SFT/DPO losses are each micro-batch's mean, which regrouping would reweight.
Measured when every loss was a micro-batch mean: sorted micro-batches with the losses reweighted to the
mini-batch token mean gave 0.063 -> 0.089 reward in 60 tiny PPO steps against > 0.094 unsorted (one seed).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from rlhf.records import Experience


def real_columns(attention_mask: torch.Tensor) -> tuple[int, int]:
    """[start, end) of the columns where at least one row has a real token."""
    used = attention_mask.bool().any(dim=0).nonzero().flatten()
    if len(used) == 0:
        return 0, attention_mask.shape[1]
    return int(used[0]), int(used[-1]) + 1


def trimmed_bounds(attention_mask: torch.Tensor, prompt_len: int) -> tuple[int, int]:
    """Column window to keep; it always spans the prompt/response boundary so responses stay aligned."""
    start, end = real_columns(attention_mask)
    return min(start, prompt_len - 1), min(max(end, prompt_len + 1), attention_mask.shape[1])


def length_order(attention_mask: torch.Tensor) -> torch.Tensor:
    """Row order, longest first (stable: equal lengths keep their order)."""
    return torch.sort(attention_mask.sum(dim=1), descending=True, stable=True).indices


def sorted_slices(n_rows: int, micro_batch_size: int, order: torch.Tensor) -> list[torch.Tensor]:
    return [order[i:i + micro_batch_size] for i in range(0, n_rows, micro_batch_size)]


def response_forward(
    fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    micro_batch_size: int,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    trim: bool = True,
) -> torch.Tensor:
    """`fn(seq, attn, prompt_len) -> [b, r]` over length-sorted, trimmed micro-batches: [B, R] float32
    in the original row order, zeros beyond each micro-batch's longest response.

    `trim=False` keeps arrival order and full width: the numbers then match, bit for bit, a model
    that runs the same rows in the same micro-batches untrimmed (DPO's step-0 policy == reference);
    trimmed shapes change the kernels' summation order, so they agree only to float rounding.
    """
    rows, response_width = sequences.shape[0], sequences.shape[1] - prompt_len
    out = torch.zeros(rows, response_width, device=sequences.device)
    order = length_order(attention_mask) if trim else torch.arange(rows, device=sequences.device)
    for index in sorted_slices(rows, micro_batch_size, order):
        attn = attention_mask[index]
        start, end = trimmed_bounds(attn, prompt_len) if trim else (0, attention_mask.shape[1])
        part = fn(sequences[index, start:end], attn[:, start:end], prompt_len - start)
        out[index, : end - prompt_len] = part.float()
    return out


def trim_experience(batch: Experience) -> Experience:
    """The same rows without the columns that are padding in all of them."""
    start, end = trimmed_bounds(batch.attention_mask, batch.prompt_len)
    width = end - batch.prompt_len
    response = {name: getattr(batch, name)[:, :width] for name in
                ("response_mask", "old_logprobs", "advantages", "returns", "old_values", "rollout_logprobs",
                 "ref_logprobs") if getattr(batch, name) is not None}
    return replace(batch, sequences=batch.sequences[:, start:end], attention_mask=batch.attention_mask[:, start:end],
                   prompt_len=batch.prompt_len - start, **response)


def plan_micro_batches(mini_batch, micro_batch_size: int) -> list:
    """The micro-batches of one optimizer step, in order; PPO experience is trimmed of all-padding columns."""
    micros = [mini_batch.select(slice(i, i + micro_batch_size)) for i in range(0, len(mini_batch), micro_batch_size)]
    return [trim_experience(m) for m in micros] if isinstance(mini_batch, Experience) else micros
