"""What an engine is asked for and what it returns."""
from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class Generation:
    """One sampled completion."""

    token_ids: list[int]
    """Generated tokens, ending with EOS when the model stopped by itself."""
    logprobs: list[float]
    """Log-prob of each generated token under the unprocessed model distribution (no temperature/top-p)."""
    prompt_index: int
    """Which of the requested prompts this completes."""
