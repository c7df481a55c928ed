"""Evaluation math against hand-computed values: perplexity, changes, general drop, the gate, the tracker."""
from __future__ import annotations

import math

import pytest

from rlhf.evaluation.scores import (ACCURACY, DROP, PERPLEXITY, gate_action, general_drop, is_better, perplexity,
                                    relative_change, target_gain)
from rlhf.evaluation.tracker import OVER_LIMIT, EvalTracker


def test_perplexity_is_exp_of_mean_token_nll():
    # Two tokens of probability 1/4 and 1/16: NLL = ln 4 + ln 16 = ln 64; per token ln 8 -> perplexity 8.
    assert perplexity(math.log(64), 2) == pytest.approx(8.0)
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_relative_change_and_its_undefined_cases():
    assert relative_change(40.0, 44.0) == pytest.approx(0.10)
    assert relative_change(-2.0, -1.0) == pytest.approx(0.5)  # divides by |start|
    assert math.isnan(relative_change(0.0, 1.0))
    assert math.isnan(relative_change(1.0, float("nan")))


def test_general_drop_is_the_worse_probe_and_never_negative():
    start = {PERPLEXITY: 40.0, ACCURACY: 0.5}
    # Perplexity 40 -> 50: per-token probability 1/40 -> 1/50, a fall of 20%.
    drops = general_drop(start, {PERPLEXITY: 50.0, ACCURACY: 0.45})
    assert drops["eval/general/perplexity_drop"] == pytest.approx(0.20)
    assert drops["eval/general/accuracy_drop"] == pytest.approx(0.10)
    assert drops[DROP] == pytest.approx(0.20)
    assert general_drop(start, {PERPLEXITY: 400.0, ACCURACY: 0.4})[DROP] == pytest.approx(0.90)  # bounded by 1
    better = general_drop(start, {PERPLEXITY: 32.0, ACCURACY: 0.6})
    assert better["eval/general/perplexity_drop"] == pytest.approx(-0.25) and better[DROP] == 0.0
    # A probe the start scores 0 on cannot drop: left out instead of dividing by zero.
    assert general_drop({PERPLEXITY: 10.0, ACCURACY: 0.0}, {PERPLEXITY: 12.5, ACCURACY: 0.0}) == {
        "eval/general/perplexity_drop": pytest.approx(0.2), DROP: pytest.approx(0.2)}
    assert general_drop({}, {}) == {DROP: 0.0}


def test_target_gain_sign_follows_the_metric_direction():
    assert target_gain(2.0, 1.0, higher_is_better=False) == pytest.approx(0.5)  # loss halves: +50%
    assert target_gain(0.2, 0.3, higher_is_better=True) == pytest.approx(0.5)
    assert target_gain(0.2, 0.1, higher_is_better=True) == pytest.approx(-0.5)


@pytest.mark.parametrize("drop, limit, action, expected", [
    (0.04, 0.05, "stop", "ok"), (0.05, 0.05, "stop", "ok"), (0.06, 0.05, "stop", "stop"),
    (0.06, 0.05, "warn", "warn"), (0.90, None, "stop", "ok"),
])
def test_gate_action(drop, limit, action, expected):
    assert gate_action(drop, limit, action) == expected


def test_is_better():
    assert is_better(1.0, None, True) and not is_better(float("nan"), None, True)
    assert is_better(0.5, 1.0, higher_is_better=False) and not is_better(1.0, 1.0, higher_is_better=False)


def test_tracker_keeps_the_best_point_within_the_limit_and_stops_over_it():
    tracker = EvalTracker("sft", max_general_drop=0.10, on_general_drop="stop")
    start = {"eval/sft/loss": 4.0, PERPLEXITY: 40.0}
    v0 = tracker.observe(0, start)
    assert v0.action == "ok" and v0.new_best and start[DROP] == 0.0 and start["eval/target/gain"] == 0.0
    p1 = {"eval/sft/loss": 2.0, PERPLEXITY: 42.0}  # 4.8% drop, loss halved: best so far
    assert tracker.observe(10, p1) .new_best and p1["eval/target/gain"] == pytest.approx(0.5)
    p2 = {"eval/sft/loss": 2.5, PERPLEXITY: 43.0}  # within, but worse target: not the best
    assert not tracker.observe(20, p2).new_best
    p3 = {"eval/sft/loss": 1.0, PERPLEXITY: 50.0}  # 20% drop: over the limit, never the best
    v3 = tracker.observe(30, p3)
    assert v3.action == "stop" and not v3.new_best and p3[OVER_LIMIT] == 1
    summary = tracker.summary("out/best")
    assert summary["best_step"] == 10 and summary["gate"] == "stopped" and summary["best_target"] == 2.0
    assert summary["best_general_drop"] == pytest.approx(1 - 40 / 42)
    assert summary["general_drop"] == pytest.approx(0.20) and summary["target_gain"] == pytest.approx(0.75)
    # The state survives a checkpoint round trip.
    again = EvalTracker("sft", 0.10, "stop")
    again.load_state_dict(tracker.state_dict())
    assert again.summary("out/best") == summary


def test_tracker_without_a_limit_only_reports():
    tracker = EvalTracker("ppo", None, "warn")
    tracker.observe(0, {"eval/reward/mean": 0.1, ACCURACY: 0.5})
    m = {"eval/reward/mean": 0.2, ACCURACY: 0.1}
    v = tracker.observe(5, m)
    assert v.action == "ok" and not v.new_best and m[DROP] == pytest.approx(0.8) and m[OVER_LIMIT] == 0


def test_tracker_without_a_target_keeps_the_latest_point_within_the_limit():
    tracker = EvalTracker("sft", 0.5, "warn")
    assert tracker.observe(0, {PERPLEXITY: 10.0}).new_best
    assert tracker.observe(5, {PERPLEXITY: 12.0}).new_best  # 16.7% drop, within 50%
    assert not tracker.observe(10, {PERPLEXITY: 40.0}).new_best  # 75% drop: over
    assert tracker.best_step == 5 and tracker.gate == "warned"


def test_tracker_with_a_general_baseline_measures_drops_against_it_and_gains_against_step_0():
    # A later pipeline stage: the pipeline began at perplexity 40, accuracy 0.5; this stage starts at 44.
    tracker = EvalTracker("sft", 0.15, "stop", general_baseline={"perplexity": 40.0, "accuracy": 0.5})
    start = {"eval/sft/loss": 4.0, PERPLEXITY: 44.0, ACCURACY: 0.5}
    assert tracker.observe(0, start).action == "ok"
    assert start[DROP] == pytest.approx(1 - 40 / 44)  # 9.1%: already dropped before this stage
    now = {"eval/sft/loss": 2.0, PERPLEXITY: 48.0, ACCURACY: 0.5}  # 1 - 44/48 = 8.3% against step 0 only
    v = tracker.observe(5, now)
    assert v.action == "stop" and now[DROP] == pytest.approx(1 - 40 / 48)  # 16.7% against the baseline
    assert now["eval/target/gain"] == pytest.approx(0.5)  # the target still counts from this stage's start
    summary = tracker.summary(None)
    assert summary["general"][PERPLEXITY] == (44.0, 48.0) and summary["general_baseline"][PERPLEXITY] == 40.0
