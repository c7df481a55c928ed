"""Several reward sources at once: score = sum over sources of weight * that source's score.

A NaN or inf from any source makes the sample's combined score non-finite, so the trainer
leaves that sample out (and counts it) rather than trusting the other sources alone.
"""
from __future__ import annotations

import torch

from rlhf.rewards.base import RewardSource, check_scores


class WeightedReward:
    def __init__(self, sources: dict[str, RewardSource], weights: dict[str, float]) -> None:
        if set(sources) != set(weights) or not sources:
            raise ValueError(f"weighted reward: sources {sorted(sources)} do not match weights {sorted(weights)}")
        self.sources = sources
        self.weights = weights
        self.name = "weighted(" + ", ".join(f"{weights[n]:g}*{s.name}" for n, s in sources.items()) + ")"

    def score(self, prompts, responses, sequences=None, attention_mask=None, columns=None) -> torch.Tensor:
        total = torch.zeros(len(responses))
        for name, source in self.sources.items():
            part = check_scores(source.score(prompts, responses, sequences, attention_mask, columns), len(responses),
                                source.name)
            total = total + self.weights[name] * part
        return total
