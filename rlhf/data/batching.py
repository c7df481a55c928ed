"""Examples -> tensors: SFT rows (optionally packed) and preference pairs.

Packing (several short examples in one row) saves the compute spent on padding. Each packed
example keeps its own positions (restarting at 0) and attends only within itself, through
a block-diagonal causal mask, so a packed row trains exactly like its examples one by one.
"""
from __future__ import annotations

from typing import Optional

import torch

from rlhf.data.examples import PreferenceExample, SFTExample
from rlhf.losses.sft import IGNORE_INDEX
from rlhf.records import PreferenceBatch, SFTBatch


def pack_examples(examples: list[SFTExample], max_length: int) -> list[list[SFTExample]]:
    """Greedy in-order packing: an example joins the current row while the row stays within max_length."""
    rows: list[list[SFTExample]] = []
    used = 0
    for ex in examples:
        if len(ex.input_ids) > max_length:
            raise ValueError(f"row {ex.row}: {len(ex.input_ids)} tokens do not fit a packed row of {max_length}")
        if rows and used + len(ex.input_ids) <= max_length:
            rows[-1].append(ex)
            used += len(ex.input_ids)
        else:
            rows.append([ex])
            used = len(ex.input_ids)
    return rows


def collate_sft(rows: list[list[SFTExample]], pad_id: int) -> SFTBatch:
    """One batch row per list of examples (a single example when not packing), right-padded."""
    width = max(sum(len(ex.input_ids) for ex in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segment_ids = torch.zeros(shape, dtype=torch.long)
    for b, row in enumerate(rows):
        start = 0
        for segment, ex in enumerate(row, start=1):
            end = start + len(ex.input_ids)
            input_ids[b, start:end] = torch.tensor(ex.input_ids)
            labels[b, start:end] = torch.tensor(ex.labels)
            position_ids[b, start:end] = torch.arange(end - start)
            segment_ids[b, start:end] = segment
            start = end
    return SFTBatch(input_ids, labels, position_ids, segment_ids)


def sft_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """The mask a causal LM needs for these rows.

    Unpacked rows: the usual [B, T] padding mask. Packed rows: a [B, 1, T, T] boolean mask,
    True where query i may attend key j (same example, j <= i); a padding position attends to
    itself only, so no softmax row is empty (an empty row would give NaN).
    """
    if int(segment_ids.max()) <= 1:
        return (segment_ids > 0).long()
    t = segment_ids.shape[1]
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool, device=segment_ids.device))
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    real = (segment_ids > 0)[:, :, None]
    own = torch.eye(t, dtype=torch.bool, device=segment_ids.device)
    return ((same & causal & real) | own).unsqueeze(1)


def layout_prompt_response(prompts: list[list[int]], responses: list[list[int]], pad_id: int,
                           prompt_len: int, response_len: int):
    """[left-padded prompt | right-padded response] rows: (sequences, attention_mask, response_mask)."""
    rows = len(prompts)
    sequences = torch.full((rows, prompt_len + response_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(sequences)
    response_mask = torch.zeros(rows, response_len)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        sequences[i, prompt_len - len(p):prompt_len] = torch.tensor(p)
        attention_mask[i, prompt_len - len(p):prompt_len] = 1
        sequences[i, prompt_len:prompt_len + len(r)] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, prompt_len:prompt_len + len(r)] = 1
        response_mask[i, :len(r)] = 1
    return sequences, attention_mask, response_mask


def collate_preferences(examples: list[PreferenceExample], pad_id: int,
                        ref_chosen: Optional[torch.Tensor] = None,
                        ref_rejected: Optional[torch.Tensor] = None,
                        pair_weight: Optional[torch.Tensor] = None) -> PreferenceBatch:
    """Chosen and rejected blocks with one shared prompt width P and response width R."""
    prompt_len = max(len(ex.prompt_ids) for ex in examples)
    response_len = max(max(len(ex.chosen_ids), len(ex.rejected_ids)) for ex in examples)
    prompts = [ex.prompt_ids for ex in examples]
    chosen = layout_prompt_response(prompts, [ex.chosen_ids for ex in examples], pad_id, prompt_len, response_len)
    rejected = layout_prompt_response(prompts, [ex.rejected_ids for ex in examples], pad_id, prompt_len,
                                      response_len)
    weight = pair_weight if pair_weight is not None else torch.ones(len(examples))
    return PreferenceBatch(*chosen, *rejected, weight, ref_chosen, ref_rejected, prompt_len)


def pad_pairs(examples: list[PreferenceExample], size: int) -> tuple[list[PreferenceExample], torch.Tensor]:
    """`examples` filled up to `size` with copies of the first one, and the weights (0 on the copies).

    Data-parallel replicas must run the same number of micro-batches (ZeRO-3 gathers weights
    collectively in every forward), so a short batch is padded, never cut unevenly.
    """
    if not examples or len(examples) > size:
        raise ValueError(f"cannot pad {len(examples)} pairs to {size}")
    weight = torch.cat([torch.ones(len(examples)), torch.zeros(size - len(examples))])
    return examples + [examples[0]] * (size - len(examples)), weight


def pad_sft_rows(rows: list[list[SFTExample]], size: int) -> list[list[SFTExample]]:
    """`rows` filled up to `size` with copies of the first one with every label ignored."""
    filler = [SFTExample(ex.row, ex.input_ids, [IGNORE_INDEX] * len(ex.labels)) for ex in rows[0]]
    return rows + [filler] * (size - len(rows))


def padded_preference_batch(examples: list[PreferenceExample], size: int, pad_id: int,
                            ref_chosen: Optional[torch.Tensor] = None,
                            ref_rejected: Optional[torch.Tensor] = None) -> PreferenceBatch:
    """`collate_preferences` of `examples` padded to `size` pairs (padding weighs 0; its reference
    log-probs are those of the first pair, never used)."""
    padded, weight = pad_pairs(examples, size)

    def pad_ref(ref: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if ref is None else torch.cat([ref, ref[:1].expand(size - len(ref))])

    return collate_preferences(padded, pad_id, pad_ref(ref_chosen), pad_ref(ref_rejected), weight)
