"""The mode table drives the other tables; the summary's windows never overlap; noise filters are exact."""
from __future__ import annotations

import math

from rlhf.algorithms.objectives import OBJECTIVES
from rlhf.config.schema import MODES
from rlhf.evaluation.task_reward import target_metric
from rlhf.modes.spec import SPECS
from rlhf.quiet import expected_load_report
from rlhf.summary import headline, summary_text


def test_every_table_is_derived_from_the_mode_specs():
    assert MODES == tuple(SPECS) == ("ppo", "sft", "rm", "dpo", "rlaif", "distill")
    assert {name: target_metric(name, None) for name in SPECS} == {
        name: (spec.target, spec.higher_is_better) for name, spec in SPECS.items()}
    # Every trained role of every mode has a loss, and no loss belongs to a role no mode trains.
    assert {key for spec in SPECS.values() for key in spec.objectives} == set(OBJECTIVES)
    for spec in SPECS.values():
        module, _, cls = spec.step.partition(":")
        assert module == f"rlhf.modes.{ {'rm': 'reward_model'}.get(spec.name, spec.name)}" and cls.endswith("Mode")


def test_headline_windows_never_overlap_on_short_runs():
    history = [{"reward/mean": v} for v in (1.0, 2.0, 3.0)]
    # 3 steps: one step at each end (not steps 1-3 twice); the middle one is in neither window.
    assert headline(history, {}, ["reward/mean"]) == {"reward/mean": (1.0, 3.0)}
    # 8 steps: the first 3 (mean of 1, 2, 3 = 2) and the last 3 (mean of 6, 7, 8 = 7).
    history = [{"reward/mean": float(v)} for v in range(1, 9)]
    assert headline(history, {}, ["reward/mean"]) == {"reward/mean": (2.0, 7.0)}
    # One step: no start window; a held-out metric starts at its step-0 value and ends at its last.
    start, end = headline([{"reward/mean": 5.0, "eval/x": 2.0}], {"eval/x": 1.0}, ["reward/mean", "eval/x"]).values()
    assert math.isnan(start[0]) and start[1] == 5.0 and end == (1.0, 2.0)


def test_summary_names_source_and_engine_and_leaves_out_a_missing_final_model():
    text = summary_text({"mode": "ppo", "steps": 3, "reward_source": "http", "rollout_engine": "builtin (cpu)",
                         "headline": {"reward/mean": (float("nan"), 0.5)}, "kl_coef": 0.05, "wall_s": 1.0,
                         "metrics": "m.jsonl", "final_model": None, "output_dir": "out"})
    assert "reward source    http" in text and "rollout engine   builtin (cpu)" in text
    assert "reward/mean              n/a (start) -> 0.5000 (end)" in text and "None" not in text


REPORT = """[transformers] LlamaForSequenceClassification LOAD REPORT from: /m
Key            | Status     | 
---------------+------------+-
lm_head.weight | UNEXPECTED | 
score.weight   | MISSING    | 
"""


def test_only_load_reports_of_heads_initialised_on_purpose_are_filtered():
    assert expected_load_report(REPORT)
    assert not expected_load_report(REPORT + "model.layers.0.mlp.up_proj.weight | MISSING    | \n")
    assert not expected_load_report(REPORT.replace("score.weight   | MISSING", "score.weight   | MISMATCH"))
    assert not expected_load_report("some other warning")
