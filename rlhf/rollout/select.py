"""Which rollout engine a run uses, and why.

`rollout.engine: auto` picks from what is installed, where the engines run and how big the
policy is. The CPU threshold comes from bench/rollout.py (table in bench/README.md): below it
vLLM's start-up outweighs what its faster generation saves over a run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import struct
from dataclasses import dataclass

from rlhf.rollout.vllm_engine import MISSING_VLLM

# bench/rollout.py on CPU (table in bench/README.md): at 50M parameters vLLM generated 3-5x the
# built-in engine's tokens/s; at 0.5M it was faster per token too, but its 40-66 s start-up buys
# back less than 0.1 s per step (the tiny PPO step generates in 0.11 s), so below this size the
# built-in engine finishes a run of a few hundred steps first.
CPU_VLLM_MIN_PARAMS = 10_000_000


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
                                    f"crossover of {CPU_VLLM_MIN_PARAMS / 1e6:.0f}M where vLLM's speed repays its start-up")
    return EngineChoice("builtin", f"auto: {params / 1e6:.1f}M parameters on CPU, below the measured crossover "
                                   f"of {CPU_VLLM_MIN_PARAMS / 1e6:.0f}M where vLLM's speed repays its start-up")


def reuse_rollout_logprobs(setting: str, engine_name: str, dtype: str, quantization: str,
                           async_generation: bool = False, is_correction: str = "none") -> bool:
    """Whether PPO takes its old log-probs from the engine instead of a policy forward.

    `auto` reuses them only where engine and trainer compute the same numbers: the built-in
    engine runs the policy's own HF model on the pushed weights, so in float32 the two agree to
    about 1e-6 (KV cache vs full forward). vLLM kernels, bf16/fp16 rounding and a 4-bit base
    (bitsandbytes' GPU kernels compute in their own precision; on CPU the generic path matched to 3e-7,
    tests/integration/test_lora.py) may open larger gaps. With off-by-one generation the engine's
    log-probs are one update old: as the ratio's denominator
    they start every step with the previous update already clipped (54% of tokens at the tiny
    PPO config, which then failed its learning bar), so `auto` recomputes them there.
    With an importance-sampling correction (`algorithm.is_correction`), the gap is what the correction
    weighs, so `auto` reuses the engine's log-probs with any engine and precision: GRPO at the `small`
    size with vLLM went from 19.5 s to 15.0 s a step (bench/README.md), and a bf16 vLLM engine feeding a
    float32 trainer this way keeps the learning bar (tests/integration/test_policy_gradient_variants.py).
    """
    if setting != "auto":
        return setting == "rollout"
    if async_generation:
        return False
    if is_correction != "none":
        return True
    return engine_name == "builtin" and dtype == "float32" and quantization == "none"
