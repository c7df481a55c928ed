"""Reward sources: each turns (prompts, responses, token rows) into one score per response.

`build_reward_source(cfg)` picks one by `reward.source`. A source returning a wrong
number of scores, or non-numbers, is an error: PPO never trains on invented zeros.
"""
from rlhf.rewards.base import RewardSource, check_scores
from rlhf.rewards.factory import build_reward_source

__all__ = ["RewardSource", "build_reward_source", "check_scores"]
