"""What an engine is asked for and what it returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, TYPE_CHECKING

from rlhf.seeds import engine_seed

if TYPE_CHECKING:
    from rlhf.config import RolloutConfig


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1
    """Samples per prompt; they come back consecutively."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    max_new_tokens: int = 16
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0
    """Seeds the sampler, so a resumed run draws the same samples."""


def engine_sampling(rollout: "RolloutConfig", n: int, seed: int) -> Callable[[int], SamplingSpec]:
    """The spec engine i samples with: the config's sampling knobs, `n` per prompt, seed `seed * 131 + i`
    (distinct per engine; the callers derive `seed` from the run seed and the step, so a resumed run
    draws the samples the first one drew)."""

    def spec_for_engine(i: int) -> SamplingSpec:
        return SamplingSpec(n=n, temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k,
                            max_new_tokens=rollout.max_new_tokens, stop=tuple(rollout.stop), seed=engine_seed(seed, i))

    return spec_for_engine


@dataclass
class Generation:
    """One sampled completion."""

    token_ids: list[int]
    """Generated tokens, ending with EOS when the model stopped by itself."""
    logprobs: list[float]
    """Log-prob of each generated token under the unprocessed model distribution (no temperature/top-p)."""
    prompt_index: int
    """Which of the requested prompts this completes."""
