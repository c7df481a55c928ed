"""Reward functions that inject faults, imported by reward actors as `reward.function`.

`flaky_letter_reward`: the letters reward, except on chosen calls (1-based, counted per reward actor
process): a whole batch of NaN, or NaN/inf for every other sample.
`letter_reward_killing_the_engine`: the letters reward, and on its 4th call it SIGKILLs rollout replica 0
(found in the run's placement.json, whose path the test puts in the actors' environment).
`slow_letter_reward`: the letters reward, half a second late (the cluster test's steps must outlast its poll).
"""
from __future__ import annotations

import json
import math
import os
import signal
import time

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


PLACEMENT_ENV = "RLHF_TEST_PLACEMENT_JSON"
KILL_ENGINE_AT_CALL = 4
_scoring_calls = 0


def letter_reward_killing_the_engine(prompts: list[str], responses: list[str]) -> list[float]:
    """Kills the engine while it is idle, at a fixed point of the run. With held-out evaluation every 2 steps
    the calls are: eval at step 0, steps 1 and 2, eval at step 2 (the 4th), step 3... The 4th comes after
    step 2's weight push, so the next call the engine gets is step 3's generation: Ray serves it from a
    restarted process holding the base weights unless the runtime notices and pushes the current ones."""
    global _scoring_calls
    _scoring_calls += 1
    if _scoring_calls == KILL_ENGINE_AT_CALL:
        with open(os.environ[PLACEMENT_ENV]) as fh:
            os.kill(json.load(fh)["rollout"][0]["pid"], signal.SIGKILL)
    return letter_reward(prompts=prompts, responses=responses)


SLOW_REWARD_S = 0.5


def slow_letter_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """The letters reward, half a second late: a step then lasts longer than the cluster test's poll, on any
    machine, so each fault it injects lands in its own step."""
    time.sleep(SLOW_REWARD_S)
    return letter_reward(prompts=prompts, responses=responses)
