"""Length-sorted, padding-trimmed micro-batches.

A step's rows are [left-padded prompt | right-padded response] at the width of the longest row
in the whole batch. Cutting a batch into micro-batches in arrival order leaves every micro-batch
about that wide; sorting rows by length first puts long rows with long rows, and each
micro-batch is then trimmed to the columns that hold a real token in at least one of its rows.

Trimming is exact: position ids come from the attention mask and attention is causal, so the
columns that are padding in every row change nothing for the real tokens. Sorting regroups the
rows, so for training the loss of each micro-batch is reweighted by its share of the
mini-batch's response tokens (`token_weights`): the step's gradient is then the token mean over
the whole mini-batch, whatever the grouping.
"""
from __future__ import annotations

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
) -> torch.Tensor:
    """`fn(seq, attn, prompt_len) -> [b, r]` over length-sorted, trimmed micro-batches: [B, R] float32
    in the original row order, zeros beyond each micro-batch's longest response."""
    rows, response_width = sequences.shape[0], sequences.shape[1] - prompt_len
    out = torch.zeros(rows, response_width)
    for index in sorted_slices(rows, micro_batch_size, length_order(attention_mask)):
        attn = attention_mask[index]
        start, end = trimmed_bounds(attn, prompt_len)
        part = fn(sequences[index, start:end], attn[:, start:end], prompt_len - start)
        out[index, : end - prompt_len] = part.float()
    return out


def trim_experience(batch: Experience) -> Experience:
    """The same rows without the columns that are padding in all of them."""
    start, end = trimmed_bounds(batch.attention_mask, batch.prompt_len)
    width = end - batch.prompt_len
    return Experience(
        sequences=batch.sequences[:, start:end],
        attention_mask=batch.attention_mask[:, start:end],
        response_mask=batch.response_mask[:, :width],
        old_logprobs=batch.old_logprobs[:, :width],
        advantages=batch.advantages[:, :width],
        returns=batch.returns[:, :width],
        old_values=None if batch.old_values is None else batch.old_values[:, :width],
        prompt_len=batch.prompt_len - start,
    )


def token_weights(token_counts: list[float]) -> list[float]:
    """Loss multipliers that turn a mean of per-micro-batch token means into the token mean over all.

    DeepSpeed averages the k micro-batch losses of one optimizer step; micro-batch i holding n_i of
    the N response tokens should count n_i / N, i.e. its mean loss times k * n_i / N.
    """
    total = sum(token_counts)
    if total <= 0:
        return [1.0 for _ in token_counts]
    k = len(token_counts)
    return [k * n / total for n in token_counts]


def plan_micro_batches(mini_batch, micro_batch_size: int) -> list[tuple[object, float]]:
    """(micro-batch, loss weight) pairs for one optimizer step.

    PPO experience is length-sorted, trimmed and token-weighted; other records (SFT, preference
    pairs) keep their order and weight 1, their losses normalising the way their modes define.
    """
    if not isinstance(mini_batch, Experience):
        return [(mini_batch.select(slice(i, i + micro_batch_size)), 1.0)
                for i in range(0, len(mini_batch), micro_batch_size)]
    slices = sorted_slices(len(mini_batch), micro_batch_size, length_order(mini_batch.attention_mask))
    micros = [trim_experience(mini_batch.select(index)) for index in slices]
    weights = token_weights([float(m.response_mask.sum()) for m in micros])
    return list(zip(micros, weights))
