"""The off-by-one schedule: which prompts a step gets, what a checkpoint records, and the episode thread."""
from __future__ import annotations

import threading

from rlhf.config import RolloutConfig
from rlhf.data.prompts import Prompt, PromptSampler
from rlhf.rollout.schedule import GenerationSchedule, InFlight


def _schedule(n: int = 10, per_step: int = 3) -> GenerationSchedule:
    prompts = [Prompt(row=i + 1, text=f"p{i}", token_ids=[i]) for i in range(n)]
    return GenerationSchedule(PromptSampler(prompts, seed=0), per_step, RolloutConfig(), seed=0)


def test_early_prompts_are_the_next_steps_and_a_checkpoint_does_not_consume_them():
    schedule, straight = _schedule(), _schedule()
    first, _ = schedule.take(1)
    assert first == straight.take(1)[0]
    before = schedule.sampler.state_dict()
    schedule.start_early(2, lambda prompts, step: InFlight(weights_version=1))
    assert schedule.sampler_state() == before  # a resume draws step 2's prompts again
    prompts, in_flight = schedule.take(2)
    assert prompts == straight.take(2)[0] and len(in_flight) == 1 and in_flight[0].weights_version == 1
    assert schedule.take(3)[1] == []  # nothing started early for step 3


def test_settle_waits_for_the_episode_thread_and_keeps_its_result_or_error_for_take():
    schedule = _schedule()
    schedule.take(1)
    release, finished = threading.Event(), []

    def play(prompts, step):
        release.wait(10)
        finished.append(step)
        return [p.row for p in prompts]

    schedule.start_early(2, lambda prompts, step: InFlight(0, episodes=schedule.in_background(play, prompts, step)))
    assert finished == []  # start_early does not wait for the episodes
    threading.Timer(0.2, release.set).start()
    schedule.settle()
    assert finished == [2]
    prompts, (in_flight,) = schedule.take(2)
    assert in_flight.episodes.result() == [p.row for p in prompts]

    def fail(prompts, step):
        raise RuntimeError("engine died")

    schedule.start_early(3, lambda prompts, step: InFlight(2, episodes=schedule.in_background(fail, prompts, step)))
    schedule.settle()  # does not raise: the generate phase meets the error, where retries happen
    _, (in_flight,) = schedule.take(3)
    assert isinstance(in_flight.episodes.exception(), RuntimeError)
    schedule.settle()  # nothing early: returns at once
