"""The pipeline's report: `report.md` (one row per stage) and `report.png`, rewritten after every stage.

A row holds the stage's mode and how it ended, its target metric before -> after, the general
perplexity and probe accuracy before -> after, the general drop against the pipeline's starting
model (with the gate's limit), steps, wall time and the folder of its model. Rows come from the
stages' run summaries, so an interrupted pipeline still reports what it did; stages not run yet are
listed as pending. Building rows and the Markdown is pure; only `write_png` touches matplotlib.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Optional

from rlhf.evaluation.scores import ACCURACY, PERPLEXITY
from rlhf.pipeline.progress import FINISHED, GATE_STOPPED, INTERRUPTED, stage_outcome

logger = logging.getLogger(__name__)

Pair = tuple[Optional[float], Optional[float]]


@dataclass
class ReportRow:
    stage: str
    mode: str
    status: str
    """finished, gate warned, stopped by the gate, interrupted, failed or pending."""
    target: Optional[str] = None
    target_values: Pair = (None, None)
    target_gain: Optional[float] = None
    perplexity: Pair = (None, None)
    accuracy: Pair = (None, None)
    drop: Optional[float] = None
    """General drop at the stage's last eval point against the pipeline's starting model."""
    limit: Optional[float] = None
    steps: Optional[int] = None
    wall_s: Optional[float] = None
    model: Optional[str] = None
    """final/ of a finished stage, best/ of one the gate stopped."""


def mode_label(cfg) -> str:
    """`sft`, `rm`, ...; PPO-family runs with their estimator (`ppo/grpo`)."""
    name = cfg.algorithm.name
    return f"{name}/{cfg.algorithm.advantage}" if name == "ppo" and cfg.algorithm.advantage != "gae" else name


def _status(summary: dict) -> str:
    outcome = stage_outcome(summary)
    if outcome == GATE_STOPPED:
        return "stopped by the gate"
    if outcome == INTERRUPTED:
        return INTERRUPTED
    return "gate warned" if (summary.get("evaluation") or {}).get("gate") == "warned" else FINISHED


def report_row(stage: str, mode: str, summary: Optional[dict], status: Optional[str] = None) -> ReportRow:
    """One stage's row from its run summary (None: not run yet); `status` overrides the summary's."""
    if summary is None:
        return ReportRow(stage, mode, status or "pending")
    ev = summary.get("evaluation") or {}
    if ev:
        target, values = ev["target"], (ev.get("target_start"), ev.get("target_end"))
    else:  # no held-out split and no probe: the first headline metric of the run
        target, values = next(iter(summary.get("headline", {}).items()), (None, (None, None)))
    general = ev.get("general") or {}
    model = summary.get("final_model") or (ev.get("best_model") if stage_outcome(summary) == GATE_STOPPED else None)
    return ReportRow(stage, mode, status or _status(summary), target, tuple(values), ev.get("target_gain"),
                     tuple(general.get(PERPLEXITY, (None, None))), tuple(general.get(ACCURACY, (None, None))),
                     ev.get("general_drop") if general else None, ev.get("max_general_drop"),
                     summary.get("steps"), summary.get("wall_s"), model)


def _num(value: Optional[float], digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pair(values: Pair, digits: int = 4) -> str:
    return "-" if values == (None, None) else f"{_num(values[0], digits)} -> {_num(values[1], digits)}"


def _drop(row: ReportRow) -> str:
    if row.drop is None or not math.isfinite(row.drop):
        return "-"
    return f"{100 * row.drop:.1f}%" + (f" (limit {100 * row.limit:.0f}%)" if row.limit is not None else "")


def report_markdown(title: str, rows: list[ReportRow], base_model: Optional[str],
                    baseline: Optional[dict[str, float]]) -> str:
    lines = [f"# Pipeline {title}", ""]
    if base_model:
        start = f"`{base_model}`"
        if baseline:
            start += " (" + ", ".join(f"general {k} {_num(v)}" for k, v in baseline.items()) + ")"
        lines += [f"Starting model: {start}; every drop below is measured against it.", ""]
    lines += ["| stage | mode | status | target metric | before -> after | general perplexity | general accuracy "
              "| drop vs start | steps | wall time | model |", "|" + "---|" * 11]
    for r in rows:
        wall = "-" if r.wall_s is None else f"{r.wall_s:.1f} s"
        lines.append(f"| {r.stage} | {r.mode} | {r.status} | {r.target or '-'} | {_pair(r.target_values)} | "
                     f"{_pair(r.perplexity, 2)} | {_pair(r.accuracy, 3)} | {_drop(r)} | "
                     f"{'-' if r.steps is None else r.steps} | {wall} | {f'`{r.model}`' if r.model else '-'} |")
    return "\n".join(lines) + "\n"


def write_png(rows: list[ReportRow], path: str, title: str) -> Optional[str]:
    """Three panels over the stages that ran: target gain, general perplexity, drop against the start.
    Without matplotlib (the `plot` extra) it logs why and writes nothing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("report.png not written: matplotlib is missing (pip install 'rlhf[plot]')")
        return None
    ran = [r for r in rows if r.steps is not None]
    names = [r.stage for r in ran]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    gains = [100 * (r.target_gain or 0.0) if r.target_gain is not None and math.isfinite(r.target_gain) else 0.0
             for r in ran]
    axes[0].bar(names, gains, color="tab:blue")
    axes[0].set_title("target metric gain over the stage (%)", fontsize=9)
    points = [("start", ran[0].perplexity[0])] if ran and ran[0].perplexity[0] is not None else []
    points += [(r.stage, r.perplexity[1]) for r in ran if r.perplexity[1] is not None]
    axes[1].plot([p[0] for p in points], [p[1] for p in points], marker="o")
    axes[1].set_yscale("log")  # a stage that breaks the model multiplies it
    axes[1].set_title("general perplexity after each stage (log)", fontsize=9)
    drops = [100 * r.drop if r.drop is not None else 0.0 for r in ran]
    axes[2].bar(names, drops, color=["tab:red" if r.status == "stopped by the gate" else "tab:orange" for r in ran])
    limits = {r.limit for r in ran if r.limit is not None}
    for limit in limits:
        axes[2].axhline(100 * limit, color="black", linestyle="--", linewidth=1)
    axes[2].set_title("general drop vs the starting model (%)", fontsize=9)
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"Pipeline {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(output_dir: str, rows: list[ReportRow], base_model: Optional[str],
                 baseline: Optional[dict[str, float]]) -> str:
    """report.md and report.png in `output_dir`; returns the Markdown's path."""
    title = os.path.basename(os.path.normpath(output_dir))
    path = os.path.join(output_dir, "report.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(report_markdown(title, rows, base_model, baseline))
    write_png(rows, os.path.join(output_dir, "report.png"), title)
    return path
