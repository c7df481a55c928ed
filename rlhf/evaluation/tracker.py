"""Follows a run's evaluation points: changes against the starting model, the gate, the best model.

The first observation (step 0, the starting model) is the reference of every change, except that
a given general baseline (`eval.general_baseline`: a pipeline's starting model) replaces it for the
general drops, so a later stage of a pipeline is judged against where the pipeline began. At each
point the tracker adds `eval/target/gain` and the general drops to the metrics, decides the gate's
action, and says whether this point is the best one so far that stays within the limit (by the
target metric); the driver then saves that model to `best/`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

from rlhf.evaluation.task_reward import target_metric
from rlhf.evaluation.scores import (DROP, GAIN, GENERAL_KEYS, gate_action, general_drop, is_better,
                                    target_gain)

logger = logging.getLogger(__name__)

OVER_LIMIT = "eval/general/over_limit"


@dataclass
class Verdict:
    action: str
    """`ok`, `warn` or `stop` (see scores.gate_action)."""
    new_best: bool
    """This point is the best within the limit so far: save it as best/."""


class EvalTracker:
    def __init__(self, mode: str, max_general_drop: Optional[float], on_general_drop: str,
                 general_baseline: Optional[dict[str, float]] = None, task_reward: Optional[str] = None) -> None:
        self.target_key, self.higher_is_better = target_metric(mode, task_reward)
        self.baseline = {GENERAL_KEYS[name]: value for name, value in (general_baseline or {}).items()}
        """eval/general/* values the drops are measured against instead of step 0's (empty: step 0's)."""
        self.max_general_drop = max_general_drop
        self.on_general_drop = on_general_drop
        self.start: Optional[dict] = None
        self.last: dict = {}
        self.best_step: Optional[int] = None
        self.best_target: Optional[float] = None
        self.best_drop: Optional[float] = None
        self.gate = "ok"
        """`ok`, `warned` (went over the limit at least once) or `stopped`."""

    def observe(self, step: int, metrics: dict) -> Verdict:
        """Add the changes against the start to `metrics` (in place) and judge this point."""
        if self.start is None:
            self.start = {k: v for k, v in metrics.items() if k.startswith("eval/")}
        metrics.update(general_drop({**self.start, **self.baseline}, metrics))
        target = metrics.get(self.target_key)
        if target is not None and self.target_key in self.start:
            metrics[GAIN] = target_gain(self.start[self.target_key], target, self.higher_is_better)
        action = gate_action(metrics[DROP], self.max_general_drop, self.on_general_drop)
        metrics[OVER_LIMIT] = int(action != "ok")
        self.last = {k: v for k, v in metrics.items() if k.startswith("eval/")}
        if action != "ok":
            logger.warning("forgetting gate: general ability dropped %.1f%% at step %d (limit %.1f%%): %s",
                           100 * metrics[DROP], step, 100 * self.max_general_drop,
                           "stopping the run" if action == "stop" else "warning only (eval.on_general_drop=warn)")
            self.gate = "stopped" if action == "stop" else "warned"
            return Verdict(action, False)
        if self.max_general_drop is None:
            return Verdict(action, False)  # no limit, no best/ to keep
        if target is None:  # no held-out split: the latest point within the limit is the best one
            new_best = True
        else:
            new_best = self.best_step is None or is_better(target, self.best_target, self.higher_is_better)
        if new_best:
            self.best_step, self.best_drop = step, metrics[DROP]
            if target is not None and math.isfinite(target):
                self.best_target = target
        return Verdict(action, new_best)

    def summary(self, best_model: Optional[str]) -> dict:
        """Target gain and general drop side by side, for the run summary."""
        start, last = self.start or {}, self.last
        general = {k: (start.get(k), last.get(k)) for k in ("eval/general/perplexity", "eval/general/accuracy")
                   if k in start}
        return {"target": self.target_key, "target_start": start.get(self.target_key),
                "target_end": last.get(self.target_key), "target_gain": last.get(GAIN),
                "general": general, "general_baseline": self.baseline or None,
                "general_drop": last.get(DROP), "max_general_drop": self.max_general_drop,
                "gate": self.gate, "best_model": best_model, "best_step": self.best_step,
                "best_target": self.best_target, "best_general_drop": self.best_drop}

    def state_dict(self) -> dict:
        return {"start": self.start, "last": self.last, "best_step": self.best_step,
                "best_target": self.best_target, "best_drop": self.best_drop, "gate": self.gate}

    def load_state_dict(self, state: dict) -> None:
        self.start, self.last = state["start"], state["last"]
        self.best_step, self.best_target, self.gate = state["best_step"], state["best_target"], state["gate"]
        self.best_drop = state.get("best_drop")
