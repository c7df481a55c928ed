"""Which prompts a PPO step generates, and when: during the step, or one step early.

Off-by-one mode (`rollout.async_generation`) starts step t+1's generation right after step t's
samples arrive, so the engines generate while the trainers run step t, with the weights before
step t's update (one update old). Single turn, the requests go straight to the engines: an engine
runs its calls in order, so the weight push that ends step t waits for them. Multi-turn episodes
are played by a driver thread, turn by turn; the push waits for that thread (`settle`), since a
push landing between two turns would mix weights inside one episode. The sampler position a
checkpoint records is the one before the early prompts were drawn: a resumed run draws them again.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Optional

from rlhf.config import RolloutConfig
from rlhf.data.prompts import Prompt, PromptSampler
from rlhf.rollout.dispatch import PendingGenerations, submit_to_engines
from rlhf.rollout.sampling import SamplingSpec, engine_sampling
from rlhf.seeds import step_seed


@dataclass
class InFlight:
    """Requests submitted before their step, and the weights they sample from."""

    weights_version: int
    """The policy step whose weights the engines held when the requests were submitted."""
    pending: Optional[PendingGenerations] = None
    """Single turn: the engines' requests."""
    episodes: Optional[Future] = None
    """Multi-turn: the RolloutBatch the episode thread will hand over (or the error it met)."""


class GenerationSchedule:
    def __init__(self, sampler: PromptSampler, prompts_per_step: int, rollout: RolloutConfig, seed: int) -> None:
        self.sampler = sampler
        self.prompts_per_step = prompts_per_step
        self.rollout = rollout
        self.seed = seed
        self.early: Optional[tuple[int, list[Prompt], InFlight, dict]] = None
        self._thread: Optional[ThreadPoolExecutor] = None

    def sampling_for(self, step: int) -> Callable[[int], SamplingSpec]:
        return engine_sampling(self.rollout, self.rollout.samples_per_prompt, step_seed(self.seed, step))

    def submit(self, engines: list, prompts: list[Prompt], step: int) -> PendingGenerations:
        return submit_to_engines(engines, [p.token_ids for p in prompts], self.sampling_for(step))

    def take(self, step: int) -> tuple[list[Prompt], list[InFlight]]:
        """This step's prompts, with its requests already in flight (a list of at most one: a retry
        after an engine restart pops it empty and submits again)."""
        if self.early is not None and self.early[0] == step:
            _, prompts, in_flight, _ = self.early
            self.early = None
            return prompts, [in_flight]
        return self.sampler.next_batch(self.prompts_per_step), []

    def start_early(self, step: int, launch: Callable[[list[Prompt], int], InFlight]) -> None:
        """Draw `step`'s prompts now and `launch(prompts, step)` their generation, before the current
        step's update reaches the engines."""
        before = self.sampler.state_dict()
        prompts = self.sampler.next_batch(self.prompts_per_step)
        self.early = (step, prompts, launch(prompts, step), before)

    def in_background(self, play: Callable[..., object], *args) -> Future:
        """Run `play(*args)` on the episode thread (one: early episodes of one step at a time)."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="early-episodes")
        return self._thread.submit(play, *args)

    def settle(self) -> None:
        """Wait until no early episode is being played (its result or error stays for `take`)."""
        if self.early is not None and self.early[2].episodes is not None:
            wait([self.early[2].episodes])

    def sampler_state(self) -> dict:
        """For checkpoints: prompts drawn for a step that has not run yet are not consumed."""
        return self.early[3] if self.early is not None else self.sampler.state_dict()
