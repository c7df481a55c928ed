"""The reward group's actor: hosts whichever reward source `reward.source` names.

Its own module so that a worker for a Python-function or HTTP source imports no model code (a
transformers modeling import costs seconds of CPU per process at start-up, where every actor
starts at once); the model and judge sources import theirs when they are built.
"""
from __future__ import annotations

from typing import Optional

import torch

from actors.common import actor, prepare_process, where_am_i
from rlhf.config import Config
from rlhf.rewards import build_reward_source
from rlhf.training.devices import actor_device


@actor
class RewardActor:
    """The driver only sees `score`."""

    def __init__(self, cfg: Config, rank: int = 0) -> None:
        prepare_process(cfg.ray.reward.num_cpus, cfg.trainer.seed + rank)
        self.device = actor_device(cfg.ray.reward.num_gpus)
        self.source = build_reward_source(cfg, device=str(self.device))

    def where(self) -> dict:
        return where_am_i(self.device)

    def score(self, prompts: list[str], responses: list[str], sequences: torch.Tensor,
              attention_mask: torch.Tensor, columns: Optional[dict[str, list]] = None) -> torch.Tensor:
        """[B] scores; `columns` are the data rows' other fields, one value per response."""
        return self.source.score(prompts, responses, sequences, attention_mask, columns)
