"""Skip/resume decisions read from a pipeline's folders, the general baseline, and the report rows
(rlhf/pipeline/progress.py, report.py)."""
from __future__ import annotations

import json
import math

import pytest

from rlhf.pipeline.progress import (baseline_from_probe, baseline_from_summary, holds_pipeline, read_baseline,
                                    stage_action, stage_outcome, write_baseline, write_json)
from rlhf.pipeline.report import report_markdown, report_row, write_png

PPL, ACC = "eval/general/perplexity", "eval/general/accuracy"


def summary(gate="ok", stopped=False, final="out/sft/final", **ev) -> dict:
    evaluation = {"target": "eval/sft/loss", "target_start": 4.86, "target_end": 1.83, "target_gain": 0.623,
                  "general": {PPL: [52.17, 68.47], ACC: [0.25, 0.25]}, "general_drop": 0.238,
                  "max_general_drop": 0.2, "gate": gate, "best_model": "out/sft/best", **ev}
    return {"mode": "sft", "steps": 5, "stopped": stopped, "stop_signal": 15, "wall_s": 12.34,
            "final_model": final, "headline": {"sft/loss": [6.3, 0.6]}, "evaluation": evaluation}


def test_stage_outcome():
    assert stage_outcome(summary()) == "finished" and stage_outcome(summary(gate="warned")) == "finished"
    assert stage_outcome(summary(gate="stopped", final=None)) == "gate_stopped"
    assert stage_outcome(summary(stopped=True, final=None)) == "interrupted"
    assert stage_outcome({"stopped": False, "steps": 3}) == "finished"  # a run without evaluation


def test_stage_action_reads_the_stage_folder(tmp_path):
    stage = tmp_path / "sft"
    assert stage_action(str(stage), needs_final=True) == "start"  # nothing there
    stage.mkdir()
    (stage / "metrics.jsonl").write_text("")
    assert stage_action(str(stage), True) == "resume"  # a run that never wrote its summary (crashed)
    write_json(str(stage / "summary.json"), summary(stopped=True, final=None))
    assert stage_action(str(stage), True) == "resume"  # stopped by a signal
    write_json(str(stage / "summary.json"), summary())
    assert stage_action(str(stage), True) == "resume"  # finished, but final/ is gone: saved again on resume
    assert stage_action(str(stage), False) == "skip"  # ...unless no final model is wanted
    (stage / "final").mkdir()
    assert stage_action(str(stage), True) == "skip"
    write_json(str(stage / "summary.json"), summary(gate="stopped", final=None))
    assert stage_action(str(stage), True) == "gate_stopped"
    assert holds_pipeline(str(tmp_path), ["sft", "rm"]) == ["sft"]


def test_write_json_leaves_no_side_file_and_keeps_nan(tmp_path):
    path = tmp_path / "summary.json"
    write_json(str(path), {"x": math.nan, "pair": (1, 2)})
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    data = json.loads(path.read_text())
    assert math.isnan(data["x"]) and data["pair"] == [1, 2]


def test_baseline_is_the_step_0_probe_of_a_run():
    assert baseline_from_summary(summary()) == {"perplexity": 52.17, "accuracy": 0.25}
    assert baseline_from_summary({"evaluation": {"general": {}}}) is None
    assert baseline_from_summary({"mode": "rm"}) is None
    assert baseline_from_probe({PPL: 50.0, "eval/sft/loss": 3.0}) == {"perplexity": 50.0}


def test_the_kept_baseline_reads_back_as_eval_general_baseline_values(tmp_path):
    assert read_baseline(str(tmp_path)) is None
    write_baseline(str(tmp_path), {"perplexity": 52.17, "accuracy": 0.25}, "base", "step 0 of stage sft")
    assert read_baseline(str(tmp_path)) == {"perplexity": 52.17, "accuracy": 0.25}  # without model and source
    assert json.loads((tmp_path / "baseline.json").read_text())["source"] == "step 0 of stage sft"


def test_report_rows_of_finished_stopped_and_pending_stages():
    done = report_row("sft", "sft", summary(gate="warned"))
    assert (done.status, done.target, done.target_values, done.model) == (
        "gate warned", "eval/sft/loss", (4.86, 1.83), "out/sft/final")
    assert done.perplexity == (52.17, 68.47) and done.accuracy == (0.25, 0.25) and done.drop == 0.238
    assert (done.steps, done.wall_s, done.limit) == (5, 12.34, 0.2)
    gated = report_row("ppo", "ppo/grpo", summary(gate="stopped", final=None))
    assert gated.status == "stopped by the gate" and gated.model == "out/sft/best"  # the best model kept
    assert report_row("rm", "rm", summary(stopped=True, final=None)).status == "interrupted"
    assert report_row("rm", "rm", None).status == "pending"
    assert report_row("rm", "rm", None, status="running").status == "running"
    plain = report_row("rm", "rm", {"mode": "rm", "steps": 2, "stopped": False, "wall_s": 1.0, "final_model": "f",
                                    "headline": {"rm/accuracy": [0.5, 0.75]}})
    assert (plain.target, plain.target_values, plain.drop) == ("rm/accuracy", (0.5, 0.75), None)


def test_report_markdown_has_one_row_per_stage():
    rows = [report_row("sft", "sft", summary()), report_row("rm", "rm", None)]
    text = report_markdown("demo", rows, "base", {"perplexity": 52.17})
    assert "Starting model: `base` (general perplexity 52.1700)" in text
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(lines) == 3  # the header and two stages
    assert lines[1] == ("| sft | sft | finished | eval/sft/loss | 4.8600 -> 1.8300 | 52.17 -> 68.47 | 0.250 -> 0.250 | "
                        "23.8% (limit 20%) | 5 | 12.3 s | `out/sft/final` |")
    assert lines[2].startswith("| rm | rm | pending | - | - |")


def test_report_png_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [report_row("sft", "sft", summary()), report_row("ppo", "ppo", summary(gate="stopped", final=None)),
            report_row("rm", "rm", None)]
    path = write_png(rows, str(tmp_path / "report.png"), "demo")
    assert path and (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
