"""Training modes besides PPO: one driver per mode, chosen by `algorithm.name`.

Every driver has the PPO orchestrator's lifecycle: construct (reads data and tokenizer, so bad
input fails before any actor starts), `group_names()`, `start(resume)`, `run() -> summary`,
`shutdown()`.
"""
from __future__ import annotations

import importlib

from rlhf.config import Config

DRIVERS: dict[str, str] = {
    "ppo": "rlhf.orchestrator:PPOOrchestrator",
    "sft": "rlhf.modes.sft:SFTDriver",
    "rm": "rlhf.modes.reward_model:RewardModelDriver",
    "dpo": "rlhf.modes.dpo:DPODriver",
    "rlaif": "rlhf.modes.rlaif:RLAIFDriver",
    "distill": "rlhf.modes.distill:DistillDriver",
}
"""algorithm.name -> `module:class` of its driver (imported on use: each pulls in Ray and torch)."""


def build_driver(cfg: Config):
    module, _, name = DRIVERS[cfg.algorithm.name].partition(":")
    return getattr(importlib.import_module(module), name)(cfg)
