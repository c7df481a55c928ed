"""`trainer.compile`: the trained models' transformer blocks compiled with `torch.compile`.

Eager PyTorch runs a block's normalisations, rotary embedding and activations as separate passes over
memory; on a CPU they took about a third of a forward+backward of the 50M model in bf16, beside the
matmuls (torch.profiler: `mul`, `add_`, `copy_` and `pow`). Inductor fuses them. Compiling each
block, not the whole model, traces one block once and reuses the code for every layer, and dynamic
shapes keep new batch sizes and sequence widths from recompiling (bench/README.md, "Compiled blocks").
"""
from __future__ import annotations

import torch


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated layers: the classes transformers keeps whole when it splits a model across
    devices (`_no_split_modules`, e.g. LlamaDecoderLayer), found through PEFT wrappers."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return [module for module in model.modules() if type(module).__name__ in names]


def compile_blocks(model: torch.nn.Module) -> int:
    """Compile each repeated block in place (names, parameters and state dicts are unchanged, so
    DeepSpeed, checkpoints and weight pushes see the same model); a model that names no block is
    compiled whole. Returns the number of compiled blocks (0: the whole model)."""
    import torch._inductor.config as inductor_config

    # Inductor compiles in a pool of worker processes by default, which then live as long as the actor
    # (four more processes, 0.45 GB, in a tiny GRPO run); in-process it is 6 s slower once, cold.
    inductor_config.compile_threads = 1
    blocks = repeated_blocks(model)
    for block in blocks:
        block.compile(dynamic=True)
    if not blocks:
        model.compile(dynamic=True)
    return len(blocks)
