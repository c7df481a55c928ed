"""Rollout engines: generate token ids with log-probs, and load new policy weights in place.

Every engine (the built-in one over HF `generate`, vLLM) offers the same two calls:
`generate(prompt_token_ids, sampling) -> list[Generation]` and `load_weights(blob, version)`.
"""
from rlhf.rollout.sampling import Generation, SamplingSpec

__all__ = ["Generation", "SamplingSpec"]
