"""The data rows' other fields ("columns") as reward sources see them.

A verifiable reward compares a response with the row's reference (`answer`, `tests`), so every
source's `score` takes `columns`: field name -> one value per response, in order (TRL's
convention of passing every dataset column to reward functions). A row that lacks a field
gives None there.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import torch


def columns_as_lists(rows: Sequence[dict]) -> dict[str, list]:
    """Per-row dicts -> {field: [value per row]}, fields in first-seen order, None where a row lacks one."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in rows] for name in names}


def call_with_accepted(fn: Callable, **kwargs: Any) -> Any:
    """Call `fn` with the keyword arguments its signature takes (all of them if it has **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: hand it everything
        return fn(**kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return fn(**kwargs)
    accepted = {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                     inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    return fn(**{k: v for k, v in kwargs.items() if k in accepted})


def score_args(rollout, rows: torch.Tensor) -> tuple:
    """The arguments of a reward actor's `score` for the samples `rows` of a RolloutBatch."""
    index = rows.tolist()
    columns = columns_as_lists([rollout.columns[i] for i in index]) if rollout.columns else {}
    return ([rollout.prompts[i] for i in index], [rollout.responses[i] for i in index],
            rollout.sequences[rows], rollout.attention_mask[rows], columns)
