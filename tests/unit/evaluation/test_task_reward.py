"""eval.task_reward: a verifiable score of held-out samples, and the target metric it becomes."""
from __future__ import annotations

import math

import pytest

from rlhf.evaluation.report import compare
from rlhf.evaluation.scores import GAIN
from rlhf.evaluation.task_reward import TASK_REWARD, TaskReward, target_metric
from rlhf.evaluation.tracker import EvalTracker

PROMPTS = ["Write the letter b five times.", "Repeat the letter k."]


def test_mean_of_the_letters_scores_by_hand():
    # "b b x" scores 2/3 for b; "kkkk" scores 1 for k: mean 5/6.
    metrics = TaskReward("rlhf.tasks:letter_reward").metrics(PROMPTS, ["b b x", "kkkk"])
    assert metrics == {TASK_REWARD: pytest.approx(5 / 6)}


def test_row_fields_reach_the_function_and_non_finite_scores_are_left_out(tmp_path, monkeypatch):
    (tmp_path / "taskfns.py").write_text(
        "def by_answer(responses, answer):\n"
        "    return [float('nan') if a is None else float(r == a) for r, a in zip(responses, answer)]\n")
    monkeypatch.chdir(tmp_path)  # functions are imported from the working directory too
    reward = TaskReward("taskfns:by_answer")
    columns = [{"answer": "yes"}, {"answer": "no"}, {}]
    assert reward.metrics(["p"] * 3, ["yes", "yes", "x"], columns) == {TASK_REWARD: 0.5}
    assert math.isnan(reward.metrics(["p"], ["x"], [{"answer": None}])[TASK_REWARD])


def test_a_wrong_number_of_scores_names_the_key():
    reward = TaskReward("rlhf.tasks:letter_reward")
    reward.source.fn = lambda prompts, responses: [1.0]
    with pytest.raises(ValueError, match=r"^eval.task_reward: .*rlhf.tasks:letter_reward returned 1 scores for 2"):
        reward.metrics(PROMPTS, ["b", "k"])


def test_the_task_reward_becomes_the_target_of_the_tracker_and_of_rlhf_eval():
    assert target_metric("ppo", None) == ("eval/reward/mean", True)
    assert target_metric("sft", None) == ("eval/sft/loss", False)
    assert target_metric("sft", "rlhf.tasks:letter_reward") == (TASK_REWARD, True)
    tracker = EvalTracker("ppo", None, "warn", task_reward="rlhf.tasks:letter_reward")
    tracker.observe(0, {"eval/reward/mean": 2.0, TASK_REWARD: 0.2})
    metrics = {"eval/reward/mean": 3.0, TASK_REWARD: 0.3}
    tracker.observe(10, metrics)
    assert metrics[GAIN] == pytest.approx(0.5)  # 0.2 -> 0.3, not the reward model's 2 -> 3
    assert tracker.summary(None)["target"] == TASK_REWARD
    changes = compare("rlaif", {TASK_REWARD: 0.4, "eval/reward/mean": 1.0},
                      {TASK_REWARD: 0.6, "eval/reward/mean": 1.0}, "rlhf.tasks:letter_reward")
    assert changes["target"] == TASK_REWARD and changes[GAIN] == pytest.approx(0.5)


def test_rlhf_eval_measures_drops_against_the_general_baseline_when_the_config_has_one():
    start = {"eval/general/perplexity": 60.0, "eval/sft/loss": 2.0}
    model = {"eval/general/perplexity": 75.0, "eval/sft/loss": 1.0}
    assert compare("sft", start, model)["eval/general/drop"] == pytest.approx(0.2)  # 1 - 60/75
    # A pipeline stage: the run measured against the pipeline's start (perplexity 50), so does rlhf eval.
    against_base = compare("sft", start, model, general_baseline={"perplexity": 50.0})
    assert against_base["eval/general/drop"] == pytest.approx(1 - 50 / 75)
    assert against_base["eval/target/gain"] == pytest.approx(0.5)  # the target still counts from the start
