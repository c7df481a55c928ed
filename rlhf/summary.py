"""The run summary printed at the end of `rlhf train`, the same for every mode.

`headline` gives each of the mode's headline metrics at the start and at the end: a held-out
metric from its step-0 value to its last one; a training metric as the mean of the first and of
the last few steps, two windows that never share a step (a short run prints n/a for the start
rather than one number twice).
"""
from __future__ import annotations

import math
from typing import Optional

WINDOW = 3
"""Steps averaged at each end of a training metric."""


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def headline(history: list[dict], start_metrics: dict, keys: list[str]) -> dict[str, tuple[float, float]]:
    """key -> (at the start, at the end) over the logged steps `history` and the step-0 metrics."""
    out = {}
    for key in keys:
        values = [row[key] for row in history if row.get(key) is not None]
        if key in start_metrics:
            out[key] = (start_metrics[key], values[-1] if values else float("nan"))
            continue
        window = min(WINDOW, len(values) // 2)
        if window == 0:
            out[key] = (float("nan"), values[-1] if values else float("nan"))
        else:
            out[key] = (_mean(values[:window]), _mean(values[-window:]))
    return out


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.1f}%"


def _num(value: Optional[float]) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def evaluation_lines(ev: dict) -> list[str]:
    """Target gain and general drop side by side, then the gate and the best model."""
    limit = ev.get("max_general_drop")
    drop = ev.get("general_drop")
    lines = [f"target           {ev['target']} {_num(ev['target_start'])} -> {_num(ev['target_end'])} "
             f"(gain {_pct(ev['target_gain'])})   general drop {'n/a' if drop is None else f'{100 * drop:.1f}%'}"
             + (f" (limit {100 * limit:.1f}%, gate {ev['gate']})" if limit is not None else "")]
    for key, (start, end) in ev.get("general", {}).items():
        lines.append(f"{key:<24} {_num(start)} (start) -> {_num(end)} (end)")
    if ev.get("best_model"):
        drop = ev.get("best_general_drop")
        lines.append(f"best model       {ev['best_model']} (step {ev['best_step']}: {ev['target']} "
                     f"{_num(ev.get('best_target'))}, general drop "
                     f"{'n/a' if drop is None else f'{100 * drop:.1f}%'}, within the limit)")
    return lines


def summary_text(summary: dict) -> str:
    lines = [f"mode             {summary['mode']}", f"steps            {summary['steps']}"]
    for key in ("reward_source", "rollout_engine", "old_logprobs"):
        if summary.get(key):
            lines.append(f"{key.replace('_', ' '):<16} {summary[key]}")
    lines += [f"{key:<24} {_num(start)} (start) -> {_num(end)} (end)"
              for key, (start, end) in summary["headline"].items()]
    if "kl_coef" in summary:
        lines.append(f"kl coef          {summary['kl_coef']:.5f}")
    if summary.get("evaluation"):
        lines += evaluation_lines(summary["evaluation"])
    startup = summary.get("startup_s")
    lines += [f"wall time        {summary['wall_s']:.1f} s"
              + (f" (start-up before it: {startup:.1f} s)" if startup is not None else ""), f"metrics          {summary['metrics']}"]
    if summary["final_model"]:
        lines.append(f"final model      {summary['final_model']}")
    lines.append(f"outputs          {summary['output_dir']}")
    return "\n== run summary ==\n" + "\n".join(lines)


def print_summary(summary: dict) -> None:
    print(summary_text(summary), flush=True)
