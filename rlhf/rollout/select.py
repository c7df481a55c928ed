"""Which rollout engine a run uses, and why.

`rollout.engine: auto` picks from what is installed, where the engines run and how big the
policy is. The CPU threshold is measured (bench/rollout.py, table in bench/README.md): below
it vLLM's per-step scheduling overhead outweighs its faster kernels and the built-in engine wins.
"""
from __future__ import annotations

import importlib.util
import json
import os
import struct
from dataclasses import dataclass

from rlhf.rollout.vllm_engine import MISSING_VLLM

# On CPU the built-in engine beat vLLM at every size bench/rollout.py measured up to this many
# parameters; see bench/README.md.
CPU_VLLM_MIN_PARAMS = 200_000_000


@dataclass(frozen=True)
class EngineChoice:
    name: str
    reason: str


def vllm_installed() -> bool:
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def count_parameters(model_path: str) -> int:
    """Parameter count read from the safetensors headers, without loading any weights."""
    files = sorted(f for f in os.listdir(model_path) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_path}: no .safetensors weights to size the model by")
    total = 0
    for name in files:
        with open(os.path.join(model_path, name), "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(header_len))
        for key, info in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total


def choose_engine(requested: str, model_path: str, gpus_per_engine: float) -> EngineChoice:
    """Resolve `rollout.engine`; fails here, before any actor exists, when vLLM is asked for but absent."""
    installed = vllm_installed()
    if requested == "vllm":
        if not installed:
            raise ImportError(MISSING_VLLM)
        return EngineChoice("vllm", "rollout.engine=vllm")
    if requested == "builtin":
        return EngineChoice("builtin", "rollout.engine=builtin")
    if not installed:
        return EngineChoice("builtin", "auto: vLLM is not installed")
    if gpus_per_engine > 0:
        return EngineChoice("vllm", "auto: engines have GPUs and vLLM is installed")
    params = count_parameters(model_path)
    if params >= CPU_VLLM_MIN_PARAMS:
        return EngineChoice("vllm", f"auto: {params / 1e6:.1f}M parameters on CPU, at or above the measured "
                                    f"crossover of {CPU_VLLM_MIN_PARAMS / 1e6:.0f}M where vLLM is faster")
    return EngineChoice("builtin", f"auto: {params / 1e6:.1f}M parameters on CPU, below the measured crossover "
                                   f"of {CPU_VLLM_MIN_PARAMS / 1e6:.0f}M where vLLM becomes faster")
