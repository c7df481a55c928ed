"""Reward functions that inject faults, imported by reward actors as `reward.function`.

The letters reward, except on chosen calls (1-based, counted per reward actor process):
a whole batch of NaN, or NaN/inf for every other sample.
"""
from __future__ import annotations

import math

from rlhf.tasks import letter_reward

ALL_NAN_CALLS = {2, 5, 6}
HALF_BAD_CALLS = {3}
_calls = 0


def flaky_letter_reward(prompts: list[str], responses: list[str]) -> list[float]:
    global _calls
    _calls += 1
    scores = letter_reward(prompts=prompts, responses=responses)
    if _calls in ALL_NAN_CALLS:
        return [math.nan] * len(scores)
    if _calls in HALF_BAD_CALLS:
        return [(math.nan if i % 4 == 0 else math.inf) if i % 2 == 0 else s for i, s in enumerate(scores)]
    return scores
