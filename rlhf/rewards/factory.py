"""One place that maps `reward.source` to a reward source."""
from __future__ import annotations

from rlhf.config import Config
from rlhf.rewards.base import RewardSource


def build_reward_source(cfg: Config) -> RewardSource:
    if cfg.reward.source == "function":
        from rlhf.rewards.function import FunctionReward

        return FunctionReward(cfg.reward.function)
    if cfg.reward.source == "model":
        from rlhf.rewards.model import ModelReward

        return ModelReward(cfg.model.reward_path, cfg.model.dtype, cfg.model.trust_remote_code,
                           cfg.trainer.micro_batch_size)
    raise ValueError(f"reward.source: unknown source {cfg.reward.source!r}")
