"""Many episodes' environments in one process, keyed by episode (what an env actor hosts)."""
from __future__ import annotations

from typing import Optional

from rlhf.envs.base import StepResult, import_environment


class LocalEnvironments:
    """One fresh `module:Class(**kwargs)` per episode key; `reset` starts a step's episodes anew."""

    def __init__(self, spec: str, kwargs: Optional[dict] = None) -> None:
        self.cls = import_environment(spec)
        self.kwargs = dict(kwargs or {})
        self.envs: dict[int, object] = {}

    def reset(self, keys: list[int], rows: list[dict]) -> list[Optional[str]]:
        self.envs = {}
        observations = []
        for key, row in zip(keys, rows):
            self.envs[key] = self.cls(**self.kwargs)
            observations.append(self.envs[key].reset(row))
        return observations

    def step(self, keys: list[int], responses: list[str]) -> list[StepResult]:
        results = []
        for key, response in zip(keys, responses):
            result = self.envs[key].step(response)
            if not isinstance(result, StepResult):
                raise TypeError(f"rollout.env: {type(self.envs[key]).__name__}.step returned "
                                f"{type(result).__name__}, not a StepResult")
            results.append(result)
        return results
