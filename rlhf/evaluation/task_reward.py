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

import math
from typing import Optional

from rlhf.rewards.columns import call_with_accepted, columns_as_lists
from rlhf.rewards.function import import_function

TASK_REWARD = "eval/task_reward/mean"


def target_metric(mode_target: str, task_reward: Optional[str]) -> str:
    """The run's target metric: the task reward's when `eval.task_reward` is set, else the mode's."""
    return TASK_REWARD if task_reward else mode_target


class TaskReward:
    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.fn = import_function(spec)

    def metrics(self, prompts: list[str], responses: list[str], columns: Optional[list[dict]] = None) -> dict:
        """`eval/task_reward/mean` over the samples whose score is finite (NaN when none is)."""
        kwargs = {**(columns_as_lists(columns) if columns else {}), "prompts": list(prompts),
                  "responses": list(responses)}
        scores = [float(s) for s in call_with_accepted(self.fn, **kwargs)]
        if len(scores) != len(responses):
            raise ValueError(f"eval.task_reward: {self.spec} returned {len(scores)} scores for "
                             f"{len(responses)} responses")
        finite = [s for s in scores if math.isfinite(s)]
        return {TASK_REWARD: sum(finite) / len(finite) if finite else float("nan")}
