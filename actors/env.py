"""Environment actors: each replica hosts the environments of many episodes (`rollout.env`), so
slow tools run beside generation instead of inside the driver. Stateless between steps: a
replica killed mid-step is restarted by Ray and the generate phase is rerun (episodes restart)."""
from __future__ import annotations

from typing import Callable, Optional

import ray

from actors.common import actor, prepare_process, where_am_i
from actors.groups import ActorGroup
from rlhf.config import Config
from rlhf.envs.base import StepResult
from rlhf.envs.pool import LocalEnvironments


@actor
class EnvActor:
    def __init__(self, cfg: Config, rank: int = 0) -> None:
        prepare_process(cfg.ray.env.num_cpus, cfg.trainer.seed + rank)
        self.pool = LocalEnvironments(cfg.rollout.env, cfg.rollout.env_kwargs)

    def where(self) -> dict:
        return where_am_i()

    def reset(self, keys: list[int], rows: list[dict]) -> list[Optional[str]]:
        return self.pool.reset(keys, rows)

    def step(self, keys: list[int], responses: list[str]) -> list[StepResult]:
        return self.pool.step(keys, responses)


class EnvironmentGroup:
    """The driver's view of the env actors as one EnvironmentPool: episode k lives on replica k % replicas."""

    def __init__(self, group: ActorGroup, fetch: Callable[[list], list] = ray.get) -> None:
        self.group = group
        self.fetch = fetch

    def _fan_out(self, method: str, keys: list[int], values: list) -> list:
        shards = [[i for i, k in enumerate(keys) if k % len(self.group) == r] for r in range(len(self.group))]
        calls = [(r, shard) for r, shard in enumerate(shards) if shard]
        refs = [getattr(self.group.handles[r], method).remote([keys[i] for i in shard], [values[i] for i in shard])
                for r, shard in calls]
        out: list = [None] * len(keys)
        for (_, shard), answers in zip(calls, self.fetch(refs)):
            for i, answer in zip(shard, answers):
                out[i] = answer
        return out

    def reset(self, keys: list[int], rows: list[dict]) -> list[Optional[str]]:
        return self._fan_out("reset", keys, rows)

    def step(self, keys: list[int], responses: list[str]) -> list[StepResult]:
        return self._fan_out("step", keys, responses)
