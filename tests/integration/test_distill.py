"""Distillation end to end: real Ray groups (student on DeepSpeed ZeRO-2, frozen teacher, student rollout
engine), the tiny policy as the student and the tiny teacher asset (twice its size, trained on the task)."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from rlhf.assets.datasets import read_jsonl
from rlhf.config import ConfigError, load
from rlhf.metrics import read_metrics
from rlhf.tasks import letter_reward
from rlhf.train import run_training
from tests.integration.resume_check import resume_matches_the_run

pytestmark = pytest.mark.slow

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "distill_tiny.yaml")


def distill_config(assets, output_dir, *extra):
    return load(CONFIG, [f"model.path={assets.policy}", f"model.teacher_path={assets.teacher}",
                         f"data.train_path={assets.data_file('task_train.jsonl')}",
                         f"data.eval_path={assets.data_file('task_eval.jsonl')}",
                         f"trainer.output_dir={output_dir}", "logging.progress=false", *extra])


def _placed_groups(cfg) -> set[str]:
    with open(os.path.join(cfg.trainer.output_dir, "placement.json")) as fh:
        return set(json.load(fh))


def test_on_policy_distillation_lowers_held_out_divergence_and_resumes(tiny_assets, ray_session, tmp_path):
    cfg = distill_config(tiny_assets, tmp_path / "straight", "trainer.steps=10", "eval.every_steps=0",
                         "trainer.save_steps=5")
    summary = run_training(cfg)
    rows = read_metrics(cfg.trainer.output_dir)
    assert _placed_groups(cfg) == {"policy", "teacher", "rollout"}
    start, end = rows[0], rows[-1]
    assert [r["step"] for r in rows] == list(range(11))
    # The teacher asset is far better at the task than the untrained student it teaches.
    assert start["eval/teacher/task_score"] > start["eval/student/task_score"] + 0.5, start
    # Held-out divergence (JSD, on the student's own samples of held-out prompts): measured 0.61 -> 0.31.
    assert end["eval/distill/divergence"] < 0.7 * start["eval/distill/divergence"], (start, end)
    assert end["eval/distill/forward_kl"] < start["eval/distill/forward_kl"]
    assert end["eval/distill/reverse_kl"] < start["eval/distill/reverse_kl"]
    train = [r["distill/divergence"] for r in rows[1:]]
    assert sum(train[-3:]) < sum(train[:3]), train
    assert all(r["weight_sync/megabytes"] > 0 for r in rows[1:])
    for who in ("student", "teacher"):
        assert end[f"eval/{who}/tokens_per_s"] > 0
    assert summary["headline"]["eval/distill/divergence"][1] == end["eval/distill/divergence"]
    # Stopped right after the step-5 checkpoint, then resumed: the restored student's weights are pushed to
    # the engines and the sampler continues, so the same samples and divergences follow.
    resume_matches_the_run(cfg, rows, 5, ("distill/divergence", "eval/distill/divergence"), tmp_path, tolerance=1e-4)


def test_on_policy_distillation_of_a_tool_using_teacher_plays_episodes(tiny_assets, ray_session, agent_sft_model,
                                                                       tmp_path):
    # Teacher: the agent SFT model (calls `calc`, then answers); student: the untrained tiny policy. Both play
    # ToolEnv episodes through the same generate phase; the student learns on its own episodes, where the
    # loss mask covers its tokens only (tool observations are context).
    cfg = load(CONFIG, [
        f"model.path={tiny_assets.policy}", f"model.teacher_path={agent_sft_model}",
        f"data.train_path={tiny_assets.data / 'agent_train.jsonl'}",
        f"data.eval_path={tiny_assets.data / 'agent_eval.jsonl'}", "data.max_prompt_tokens=32",
        f"trainer.output_dir={tmp_path / 'agent'}", "logging.progress=false", "trainer.steps=10",
        "trainer.prompts_per_step=8", "eval.every_steps=0", "trainer.save_steps=0",
        "rollout.env=rlhf.envs.tools:ToolEnv", "rollout.env_kwargs={tools: [calc]}", "rollout.max_turns=3",
        "rollout.max_total_tokens=96", "rollout.max_new_tokens=32", "rollout.tool_output_tokens=16",
        "rollout.temperature=0.7", "rollout.env_reward_weight=0"])
    run_training(cfg)
    rows = read_metrics(cfg.trainer.output_dir)
    assert _placed_groups(cfg) == {"policy", "teacher", "rollout", "env"}
    start, end = rows[0], rows[-1]
    # The teacher's held-out episodes go through the tool (more than one turn) and mostly answer right;
    # the untrained student's do not.
    assert start["eval/teacher/episode/turns_mean"] > 1.5 and start["eval/teacher/episode/tool_calls_mean"] > 0.5
    assert start["eval/teacher/task_score"] > start["eval/student/task_score"] + 0.3, start
    assert all("episode/turns_mean" in r and r["episode/env_time_s"] > 0 for r in rows[1:])
    # Held-out JSD on the student's own episodes: measured 0.655 -> 0.538 (the student does not pick up the
    # tool format from scratch in so few steps: its episodes stay one turn, task score 0).
    assert end["eval/distill/divergence"] < 0.9 * start["eval/distill/divergence"], (start, end)


def test_offline_distillation_raises_the_student_task_score(tiny_assets, ray_session, tmp_path):
    cfg = distill_config(tiny_assets, tmp_path / "straight", "algorithm.distill.mode=offline", "trainer.steps=20",
                         "eval.every_steps=0", "trainer.mini_batch_size=16", "trainer.micro_batch_size=8",
                         "rollout.samples_per_prompt=1", "ray.policy.replicas=1", "trainer.save_steps=10")
    summary = run_training(cfg)
    rows = read_metrics(cfg.trainer.output_dir)
    start, end = rows[0], rows[-1]
    # Student task score on held-out prompts: measured 0.04 -> 0.26 after 20 SFT steps on the teacher's answers.
    assert end["eval/student/task_score"] > start["eval/student/task_score"] + 0.1, (start, end)
    assert end["eval/distill/divergence"] < start["eval/distill/divergence"]
    assert rows[-1]["sft/loss"] < 0.6 * rows[1]["sft/loss"]
    # The teacher's answers were saved as an SFT dataset, reported in data_report.json.
    with open(os.path.join(cfg.trainer.output_dir, "data_report.json")) as fh:
        report = json.load(fh)["teacher_data"]
    data = read_jsonl(report["path"])
    assert len(data) == report["rows_written"] == report["sft_rows"] > 400
    assert report["rows_written"] + report["empty_answers_left_out"] == 462  # one answer per train prompt
    assert sum(letter_reward([r["prompt"] for r in data], [r["response"] for r in data])) / len(data) > 0.7
    # Stopped right after the step-10 checkpoint, then resumed: the teacher's saved answers are read back (not
    # generated again) and the same batches and losses follow, up to the same final score.
    resumed = resume_matches_the_run(cfg, rows, 10, ("sft/loss", "eval/student/task_score"), tmp_path)
    assert resumed[-1]["eval/student/task_score"] == pytest.approx(end["eval/student/task_score"], abs=1e-6)


def test_teacher_with_another_vocabulary_fails_before_any_actor(tiny_assets, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_assets.teacher, teacher)
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] + 8}))
    cfg = distill_config(tiny_assets, tmp_path / "out", f"model.teacher_path={teacher}")
    with pytest.raises(ConfigError, match="^model.teacher_path: vocab_size 520 differs"):
        run_training(cfg)
    assert not os.path.exists(tmp_path / "out" / "placement.json")
