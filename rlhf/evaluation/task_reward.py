"""A verifiable score of the held-out samples, apart from the reward the run trains against.

A run that trains against a learned reward (a reward model, an AI judge) is judged by that same
reward at its eval points, which a policy can please without doing the task (reward
over-optimisation). `eval.task_reward: module:function` scores the same held-out samples with a
verifiable function instead (`rlhf.tasks:letter_reward` for the letters task), called like a
`reward.source: function` (prompts, responses and the rows' other fields). It is logged as
`eval/task_reward/mean` and becomes the run's target metric: the one the forgetting gate's best
model and the pipeline report follow.
"""
from __future__ import annotations

from typing import Optional

import torch

from rlhf.modes.spec import SPECS
from rlhf.rewards.columns import columns_as_lists
from rlhf.rewards.function import FunctionReward

TASK_REWARD = "eval/task_reward/mean"
KEY = "eval.task_reward"


def target_metric(mode: str, task_reward: Optional[str]) -> tuple[str, bool]:
    """(the run's target metric, whether higher is better): the task reward when `eval.task_reward` is set,
    else the mode's own target."""
    spec = SPECS[mode]
    return (TASK_REWARD, True) if task_reward else (spec.target, spec.higher_is_better)


class TaskReward:
    """The `eval.task_reward` function, called as a `reward.source: function` is (same checks on its scores)."""

    def __init__(self, spec: str) -> None:
        self.source = FunctionReward(spec, KEY)

    def metrics(self, prompts: list[str], responses: list[str], columns: Optional[list[dict]] = None) -> dict:
        """`eval/task_reward/mean` over the samples whose score is finite (NaN when none is)."""
        try:
            scores = self.source.score(prompts, responses, columns=columns_as_lists(columns) if columns else None)
        except ValueError as err:
            raise ValueError(f"{KEY}: {err}") from None
        finite = scores[torch.isfinite(scores)]
        return {TASK_REWARD: float(finite.mean()) if len(finite) else float("nan")}
