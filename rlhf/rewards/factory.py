"""One place that maps `reward.source` to a reward source."""
from __future__ import annotations

from typing import Callable

from rlhf.config import Config
from rlhf.rewards.base import RewardSource


def _function(cfg: Config, device: str) -> RewardSource:
    from rlhf.rewards.function import FunctionReward

    return FunctionReward(cfg.reward.function)


def _model(cfg: Config, device: str) -> RewardSource:
    from rlhf.rewards.model import ModelReward

    return ModelReward(cfg.model.reward_path, cfg.model.dtype, cfg.model.trust_remote_code,
                       cfg.trainer.micro_batch_size, device)


def _judge(cfg: Config, device: str) -> RewardSource:
    from rlhf.rewards.judge import ApiJudge, LocalJudge
    from rlhf.rewards.remote import RetryPolicy
    from rlhf.rewards.rubric import load_rubric

    judge = cfg.reward.judge
    rubric = load_rubric(judge.rubric_path)
    if judge.backend == "local":
        return LocalJudge(judge.model_path, rubric, cfg.model.dtype, cfg.model.trust_remote_code,
                          cfg.trainer.micro_batch_size, device)
    return ApiJudge(judge.base_url, judge.model, rubric, RetryPolicy.from_config(cfg.reward.remote),
                    judge.api_key_env, judge.max_tokens, cfg.reward.remote.concurrency)


def _http(cfg: Config, device: str) -> RewardSource:
    from rlhf.rewards.http import HttpReward
    from rlhf.rewards.remote import RetryPolicy

    return HttpReward(cfg.reward.http.url, RetryPolicy.from_config(cfg.reward.remote, cfg.reward.http.retry_window_s),
                      cfg.reward.remote.batch_size,
                      cfg.reward.http.api_key_env)


BUILDERS: dict[str, Callable[[Config, str], RewardSource]] = {
    "function": _function,
    "model": _model,
    "judge": _judge,
    "http": _http,
}


def build_reward_source(cfg: Config, device: str = "cpu") -> RewardSource:
    """The source `reward.source` names (a weighted sum of several with `weighted`); reward models
    and local judges load onto `device` (their actor's)."""
    name = cfg.reward.source
    if name == "weighted":
        from rlhf.rewards.weighted import WeightedReward

        return WeightedReward({n: BUILDERS[n](cfg, device) for n in cfg.reward.weights}, cfg.reward.weights)
    if name not in BUILDERS:
        raise ValueError(f"reward.source: unknown source {name!r} (known: {', '.join(BUILDERS)}, weighted)")
    return BUILDERS[name](cfg, device)
