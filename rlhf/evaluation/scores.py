"""Pure numbers of evaluation: perplexity, relative change, general drop, target gain, the gate.

The general ability of a model is measured by two probes; its *drop* against the starting model
is the worse of the two: the relative fall of the held-out text's per-token (geometric-mean)
probability, 1 / perplexity, i.e. 1 - ppl_start / ppl_now, and the relative fall of the share of
general prompts answered right. Both are fractions of the starting ability, at most 1. A probe the starting model scores nothing on (no
right answer) cannot drop and is left out, rather than dividing by zero.
"""
from __future__ import annotations

import math
from typing import Optional

PERPLEXITY = "eval/general/perplexity"
ACCURACY = "eval/general/accuracy"
DROP = "eval/general/drop"
GAIN = "eval/target/gain"
GENERAL_KEYS = {"perplexity": PERPLEXITY, "accuracy": ACCURACY}
"""The short names of `eval.general_baseline` -> the metric keys they stand for."""


def perplexity(nll_sum: float, tokens: int) -> float:
    """exp(mean negative log-likelihood per token); tokens must be > 0."""
    if tokens <= 0:
        raise ValueError("perplexity of zero tokens")
    return math.exp(nll_sum / tokens)


def relative_change(start: float, now: float) -> float:
    """(now - start) / |start|; NaN when start is 0 or either value is not finite."""
    if not (math.isfinite(start) and math.isfinite(now)) or start == 0:
        return float("nan")
    return (now - start) / abs(start)


def general_drop(start: dict, now: dict) -> dict[str, float]:
    """Per-probe drops (a positive number is a loss of ability) and their maximum under DROP.

    Perplexity: 40 -> 50 is a drop of 1 - 40/50 = 0.20. Accuracy: 0.50 -> 0.40 is a drop of 0.20.
    Improvements are negative drops; the overall drop is never below 0.
    """
    drops = {}
    if PERPLEXITY in start and PERPLEXITY in now:
        drops["eval/general/perplexity_drop"] = -relative_change(1 / start[PERPLEXITY], 1 / now[PERPLEXITY])
    if ACCURACY in start and ACCURACY in now and start[ACCURACY] > 0:
        drops["eval/general/accuracy_drop"] = 0.0 - relative_change(start[ACCURACY], now[ACCURACY])
    finite = [d for d in drops.values() if math.isfinite(d)]
    drops[DROP] = max([0.0, *finite])
    return drops


def target_gain(start: float, now: float, higher_is_better: bool) -> float:
    """Relative improvement of the target metric: +0.5 is 50% better (loss 2 -> 1, reward 0.2 -> 0.3)."""
    change = relative_change(start, now)
    return (change if higher_is_better else -change) + 0.0  # + 0.0: no "-0.0" in the logs


def gate_action(drop: float, max_drop: Optional[float], on_drop: str) -> str:
    """`ok` within the limit (or without one), else the configured action: `warn` or `stop`."""
    if max_drop is None or drop <= max_drop:
        return "ok"
    return on_drop


def is_better(value: float, best: Optional[float], higher_is_better: bool) -> bool:
    """Strictly better than the best so far (the first finite value always is)."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if higher_is_better else value < best
