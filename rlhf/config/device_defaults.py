"""Settings whose right value depends on the device: resolved once, from the configured resources.

A key left at null (`auto`) gets the CPU value when the groups it concerns hold no GPU, else the GPU
value; the choice is logged and written into the resolved config (config.yaml, W&B), so a run states
what it used. Values the user set are never touched. The device is read from `ray.<group>.num_gpus`,
not from the driver's `torch.cuda.is_available()`: the driver may sit on a machine without GPUs.
(The engines' dtype is `rollout.dtype`, whose `auto` resolves elsewhere; a bf16 GPU default for
engines belongs beside the rules below.)
"""
from __future__ import annotations

import logging

from rlhf.config.schema import Config

logger = logging.getLogger(__name__)

CPU_ENGINE_MEMORY = 0.15
"""On CPU vLLM reserves this share of host memory (a shared machine; STACK.md)."""
OWN_GPU_ENGINE_MEMORY = 0.85
COLOCATED_GPU_ENGINE_MEMORY = 0.4
"""Colocated engines sleep while the trainers run, but their weights and the trainers' share the card."""
CPU_COLLECTIVE_TIMEOUT_S = 60.0
GPU_COLLECTIVE_TIMEOUT_S = 1800.0


def device_defaults(cfg: Config) -> dict[str, object]:
    """dotted key -> the value `auto` stands for under this config's resources (pure)."""
    engines_on_gpu = cfg.ray.rollout.num_gpus > 0
    trainers_on_gpu = cfg.ray.policy.num_gpus > 0
    if not engines_on_gpu:
        memory = CPU_ENGINE_MEMORY
    else:
        memory = COLOCATED_GPU_ENGINE_MEMORY if cfg.ray.colocate else OWN_GPU_ENGINE_MEMORY
    return {
        "rollout.gpu_memory_utilization": memory,
        "rollout.enforce_eager": not engines_on_gpu,
        "rollout.engine_core_in_process": not engines_on_gpu,
        "ray.collective_timeout_s": GPU_COLLECTIVE_TIMEOUT_S if trainers_on_gpu else CPU_COLLECTIVE_TIMEOUT_S,
        "trainer.zero_init": trainers_on_gpu and cfg.trainer.zero_stage == 3,
    }


def resolve_device_defaults(cfg: Config) -> dict[str, object]:
    """Fill every null device-dependent key of `cfg` in place; returns what was filled (and logs it)."""
    filled = {}
    for dotted, value in device_defaults(cfg).items():
        section, key = dotted.split(".")
        owner = getattr(cfg, section)
        if getattr(owner, key) is None:
            setattr(owner, key, value)
            filled[dotted] = value
    if filled:
        logger.info("device defaults (policy GPUs %g, engine GPUs %g): %s", cfg.ray.policy.num_gpus,
                    cfg.ray.rollout.num_gpus, ", ".join(f"{k}={v}" for k, v in filled.items()))
    return filled
