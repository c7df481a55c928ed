"""Packed against padded training rows: one forward+backward of a micro-batch, per layout.

    python -m bench.packing [--size small] [--precision bf16] [--rows 8] [--max-new-tokens 128] [--repeats 5]

A micro-batch of RL rows ([prompt | response], lengths drawn like the benchmark's: prompts of 12-24
tokens, responses of max_new_tokens or shorter) runs forward and backward in three layouts on one
thread, as a trainer with one core does:

- padded: one row per sequence at the micro-batch's longest length (what the trainers run);
- packed to W tokens: sequences placed first-fit-decreasing into rows of at most W tokens, each with
  its own positions and a block-diagonal causal mask (rlhf.data.batching.sft_attention_mask, SFT's
  packing), W = 256, 512, 1024;

each under eager and sdpa attention. Prints the real and computed token counts and the median
seconds per layout; bench/README.md ("Packed rows") holds the measurements.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from bench.rollout import ensure_assets
from rlhf.data.batching import collate_sft, sft_attention_mask
from rlhf.data.examples import SFTExample
from rlhf.losses.sft import IGNORE_INDEX


def sequence_lengths(rows: int, max_new_tokens: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(12, 24) + (max_new_tokens if rng.random() < 0.45 else rng.randint(max_new_tokens // 2,
                                                                                          max_new_tokens - 1))
            for _ in range(rows)]


def padded_layout(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(lengths)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, width - n:] = 1  # left-padded, like a prompt
    return torch.randint(3, 500, mask.shape), mask, (mask.cumsum(1) - 1).clamp(min=0)


def packed_layout(lengths: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows: list[list[SFTExample]] = []
    for n in sorted(lengths, reverse=True):
        example = SFTExample(0, torch.randint(3, 500, (n,)).tolist(), [IGNORE_INDEX] * n)
        home = next((row for row in rows if sum(len(ex.input_ids) for ex in row) + n <= width), None)
        if home is None:
            rows.append([example])
        else:
            home.append(example)
    batch = collate_sft(rows, pad_id=0)  # SFT's packed layout: positions restart per example
    return batch.input_ids, sft_attention_mask(batch.segment_ids), batch.position_ids


def time_layout(model, layout, attention: str, repeats: int) -> float:
    ids, mask, positions = layout
    model.config._attn_implementation = attention
    times = []
    for _ in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits.float().mean().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first call warms kernels up


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "small"), default="small")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(ensure_assets(args.size), dtype=dtype).train()
    lengths = sequence_lengths(args.rows, args.max_new_tokens)
    layouts = {"padded": padded_layout(lengths)}
    layouts.update({f"packed to {w}": packed_layout(lengths, w) for w in (256, 512, 1024) if w >= max(lengths)})
    print(f"{args.size} {args.precision}: {args.rows} sequences, {sum(lengths)} real tokens")
    for name, layout in layouts.items():
        shape = tuple(layout[0].shape)
        cells = " | ".join(f"{attention} {time_layout(model, layout, attention, args.repeats):.3f} s"
                           for attention in ("eager", "sdpa"))
        print(f"{name:14s} rows x width {shape}, {layout[0].numel()} computed tokens: {cells}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
