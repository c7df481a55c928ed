"""The reward-source interface."""
from __future__ import annotations

from typing import Optional, Protocol

import torch


class RewardSource(Protocol):
    name: str

    def score(
        self, prompts: list[str], responses: list[str], sequences: torch.Tensor, attention_mask: torch.Tensor,
        columns: Optional[dict[str, list]] = None,
    ) -> torch.Tensor:
        """One float score per response, [B]. Text sources use the strings, model sources the token rows;
        `columns` holds the data rows' other fields, one value per response (rlhf.rewards.columns)."""
        ...


def check_scores(scores, expected: int, source: str) -> torch.Tensor:
    """Scores as a float tensor [expected], or a ValueError saying what the source got wrong."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().float().flatten().tolist()
    try:
        values = [float(s) for s in scores]
    except (TypeError, ValueError):
        raise ValueError(f"reward source {source} returned non-numbers: {list(scores)[:5]!r}") from None
    if len(values) != expected:
        raise ValueError(f"reward source {source} returned {len(values)} scores for {expected} responses")
    # NaN/inf are passed through on purpose: the trainer masks and counts them per sample.
    return torch.tensor(values, dtype=torch.float32)
