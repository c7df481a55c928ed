"""Where a pipeline stands, read from its folders: what to do with each stage, and the general baseline.

A stage that ended writes its run summary to `STAGE/summary.json`. On a re-run a stage is skipped
when that summary says it finished and its final model is there; it resumes (`run_training(resume=True)`)
when it was interrupted (a stop request, a crash: its folder holds a run but no finished summary); it
starts when its folder holds nothing; and a stage the forgetting gate stopped stops the pipeline again
(delete its folder, or change the pipeline, to run it anew).

The baseline of the forgetting gate is the general-ability metrics of the pipeline's starting model,
kept in `OUTPUT_DIR/baseline.json` once known: the step-0 probe of the first probed stage that starts
from that model, or (when a probed stage that starts elsewhere comes first) a probe of the model on
the driver before that stage.
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

from rlhf.evaluation.scores import GENERAL_KEYS
from rlhf.preflight import RUN_FILES

SUMMARY = "summary.json"
BASELINE = "baseline.json"

SKIP, RESUME, START, GATE_STOPPED = "skip", "resume", "start", "gate_stopped"
FINISHED, INTERRUPTED = "finished", "interrupted"


def read_json(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_json(path: str, data: dict) -> None:
    """Written to a side file and renamed: a killed pipeline never leaves half a summary."""
    staging = path + ".tmp"
    with open(staging, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, default=str)
    os.replace(staging, path)


def stage_outcome(summary: dict) -> str:
    """How a stage's run ended: `finished`, `gate_stopped` or `interrupted` (SIGTERM / Ctrl-C)."""
    if (summary.get("evaluation") or {}).get("gate") == "stopped":
        return GATE_STOPPED
    return INTERRUPTED if summary.get("stopped") else FINISHED


def stage_action(stage_dir: str, needs_final: bool) -> str:
    """`skip`, `resume`, `start` or `gate_stopped` for the stage whose folder is `stage_dir`."""
    summary = read_json(os.path.join(stage_dir, SUMMARY))
    if summary is not None:
        outcome = stage_outcome(summary)
        if outcome == GATE_STOPPED:
            return GATE_STOPPED
        if outcome == FINISHED and (not needs_final or os.path.isdir(os.path.join(stage_dir, "final"))):
            return SKIP
        return RESUME  # interrupted, or its final/ is gone: the last checkpoint saves it again
    if any(os.path.exists(os.path.join(stage_dir, name)) for name in RUN_FILES):
        return RESUME
    return START


def holds_pipeline(output_dir: str, names: list[str]) -> list[str]:
    """The stages whose folders under `output_dir` already hold a run (a fresh start must not write there)."""
    return [name for name in names if stage_action(os.path.join(output_dir, name), False) != START]


def baseline_from_summary(summary: dict) -> Optional[dict[str, float]]:
    """The general metrics at a run's step 0, as `eval.general_baseline` values; None without a probe."""
    general = (summary.get("evaluation") or {}).get("general") or {}
    short = {name: general[key][0] for name, key in GENERAL_KEYS.items()
             if key in general and general[key][0] is not None and math.isfinite(general[key][0])}
    return short or None


def write_baseline(output_dir: str, baseline: dict[str, float], model: str, source: str) -> None:
    write_json(os.path.join(output_dir, BASELINE), {**baseline, "model": model, "source": source})


def read_baseline(output_dir: str) -> Optional[dict[str, float]]:
    """The `eval.general_baseline` values kept in OUTPUT_DIR/baseline.json (None before they are known)."""
    kept = read_json(os.path.join(output_dir, BASELINE))
    return None if kept is None else {name: kept[name] for name in GENERAL_KEYS if name in kept}


def baseline_from_probe(metrics: dict) -> dict[str, float]:
    """Probe metrics (eval/general/*) -> `eval.general_baseline` values."""
    return {name: metrics[key] for name, key in GENERAL_KEYS.items() if key in metrics}
