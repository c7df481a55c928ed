"""Which attention kernel a trained forward runs on CPU.

Transformers loads our models with torch's scaled-dot-product attention (`sdpa`). On CPU in bf16 its
flash-attention backward is slow on short rows: profiling a DPO step of the 50.7M model put half of
the backward in it. A forward and backward of that model in bf16 (bench/README.md, "The 50M rows in
bf16") took 1.16 s with the eager kernel (plain matmuls and a softmax, which the CPU's
bf16 matrix units run) against 1.50 s with `sdpa` at 16 rows of 140 tokens, 0.67 s against 0.97 s at
32 rows of 40; the two were even at 256 tokens and `sdpa` won from 384 on (eager's memory grows with
the square of the width). Forwards without gradients, and float32 (4% apart), are left on `sdpa`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

EAGER_MAX_WIDTH = 256
"""Widest row (tokens) whose trained forward uses eager attention on CPU in bf16/fp16."""
LOW_PRECISION = (torch.bfloat16, torch.float16)


def prefers_eager_attention(model: torch.nn.Module, width: int) -> bool:
    """Whether a forward of rows `width` tokens wide should switch this model from `sdpa` to eager."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if not torch.is_grad_enabled() or width > EAGER_MAX_WIDTH:
        return False
    if getattr(model, "is_gradient_checkpointing", False):  # a recomputed layer must run the kernel it ran
        return False
    weight = next(model.parameters(), None)
    return weight is not None and weight.device.type == "cpu" and weight.dtype in LOW_PRECISION


@contextmanager
def attention_for_width(model: torch.nn.Module, width: int) -> Iterator[None]:
    """Run the enclosed forward with eager attention where `prefers_eager_attention` says so.

    Transformers reads `config._attn_implementation` at every forward (the mask's format and the
    kernel), so switching it around one forward is enough: autograd keeps the graph it recorded."""
    if not prefers_eager_attention(model, width):
        yield
        return
    config = model.config
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"
