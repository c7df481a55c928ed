"""The environment interface of multi-turn rollouts (`rollout.env: module:Class`).

An episode: `reset(row)` with the data row (it may return a first observation), then the policy
writes a turn, `step(response)` answers with a StepResult, and so on until `done`,
`rollout.max_turns` or `rollout.max_total_tokens`. Observations enter the conversation as a
`rollout.env_role` turn; only the policy's own tokens are trained (rlhf.rollout.episodes).
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Optional, Protocol


@dataclass
class StepResult:
    observation: Optional[str]
    """The environment's answer, shown to the policy as the next turn (None: nothing to show)."""
    reward: float
    """This step's reward; an episode's reward is the sum over its steps."""
    done: bool
    """True ends the episode."""
    info: dict = field(default_factory=dict)
    """Free-form; ToolEnv reports {"tool_calls": n, "tool_errors": n} here for the episode metrics."""


class Environment(Protocol):
    def reset(self, row: dict) -> Optional[str]:
        """Start an episode on a data row; may return a first observation."""
        ...

    def step(self, response: str) -> StepResult:
        """Answer one policy turn."""
        ...


def import_environment(spec: str) -> type:
    """The class `module:Class` names, or ValueError naming `rollout.env` (checked before any actor starts)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"rollout.env: expected 'module:Class', got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"rollout.env: cannot import module {module_name!r}: {err}") from None
    cls = getattr(module, attr, None)
    if not isinstance(cls, type) or not callable(getattr(cls, "reset", None)) or not callable(getattr(cls, "step", None)):
        raise ValueError(f"rollout.env: {module_name!r} has no class {attr!r} with reset() and step()")
    return cls
