"""Spread one step's prompts over the rollout engines and put their answers back in order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import ray

from rlhf.rollout.sampling import Generation, SamplingSpec


def split_evenly(items: list, parts: int) -> list[list]:
    """Consecutive chunks whose sizes differ by at most one, earlier chunks larger."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def merge_generations(chunk_sizes: list[int], per_engine: list[list[Generation]]) -> list[Generation]:
    """Concatenate engine outputs, turning each engine's prompt_index into an index into the whole step."""
    merged, offset = [], 0
    for size, generations in zip(chunk_sizes, per_engine):
        for g in generations:
            if not 0 <= g.prompt_index < size:
                raise ValueError(f"engine answered prompt {g.prompt_index} of a chunk of {size}")
            merged.append(Generation(g.token_ids, g.logprobs, g.prompt_index + offset))
        offset += size
    return merged


@dataclass
class PendingGenerations:
    """Generation requests in flight on the engines (object refs), one chunk of prompts per engine."""

    chunk_sizes: list[int]
    refs: list


def submit_to_engines(
    engines: list, prompt_token_ids: list[list[int]], spec_for_engine: Callable[[int], SamplingSpec]
) -> PendingGenerations:
    """Start generating on every engine at once (actor handles with `generate`); engine i samples
    with spec_for_engine(i). Returns without waiting."""
    chunks = [c for c in split_evenly(prompt_token_ids, len(engines)) if c]
    refs = [engine.generate.remote(chunk, spec_for_engine(i)) for i, (engine, chunk) in enumerate(zip(engines, chunks))]
    return PendingGenerations([len(c) for c in chunks], refs)


def collect_generations(pending: PendingGenerations, fetch: Callable[[list], list] = ray.get) -> list[Generation]:
    """Wait for submitted requests (`fetch`: the driver passes a fail-fast wait) and merge them in order."""
    return merge_generations(pending.chunk_sizes, fetch(pending.refs))


def generate_on_engines(
    engines: list,
    prompt_token_ids: list[list[int]],
    spec_for_engine: Callable[[int], SamplingSpec],
    fetch: Callable[[list], list] = ray.get,
) -> list[Generation]:
    """Submit and wait: every engine's share of the prompts, merged back in order."""
    return collect_generations(submit_to_engines(engines, prompt_token_ids, spec_for_engine), fetch)
