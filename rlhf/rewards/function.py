"""A Python function as the reward: `module:function`, called as `fn(prompts=[...], responses=[...], **columns)`.

`columns` are the data rows' other fields as lists (`answer=[...]`); a function that does not
name them is called with only what its signature takes, so `def f(prompts, responses)` still works.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

import torch

from rlhf.rewards.base import check_scores
from rlhf.rewards.columns import call_with_accepted


def import_function(spec: str, key: str = "reward.function") -> Callable:
    """Import `module:function`, looking in the working directory too (as a user would expect); errors name
    the config `key` that gave the spec."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{key}: cannot import module {module_name!r}: {err}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{key}: {module_name!r} has no callable {attr!r}")
    return fn


class FunctionReward:
    def __init__(self, spec: str, key: str = "reward.function") -> None:
        self.name = f"function:{spec}"
        self.fn = import_function(spec, key)

    def score(self, prompts, responses, sequences=None, attention_mask=None, columns=None) -> torch.Tensor:
        # The texts win over a data field of the same name: they are what is being scored.
        kwargs = {**(columns or {}), "prompts": list(prompts), "responses": list(responses)}
        return check_scores(call_with_accepted(self.fn, **kwargs), len(responses), self.name)
