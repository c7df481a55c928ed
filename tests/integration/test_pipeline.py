"""`rlhf pipeline` end to end on the shared Ray: stages run in order on real actors, a stop request during
a stage ends the pipeline with a checkpoint and `--resume` continues it without rerunning finished
stages, references carry one stage's model into the next, and the forgetting gate of a later stage
measures against the pipeline's starting model and stops the pipeline there."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import yaml

from rlhf.evaluation.scores import DROP, general_drop
from rlhf.metrics import read_metrics
from rlhf.pipeline.runner import run_pipeline

pytestmark = pytest.mark.slow

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
QUIET = {"logging.progress": False}


def write_pipeline(tmp_path, stages: list[dict]) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "stages": stages}, sort_keys=False))
    return str(path)


def probe(data, limit=None) -> dict:
    keys = {"eval.general_text_path": str(data / "general_eval.txt"),
            "eval.general_prompts_path": str(data / "general_prompts.jsonl"), "eval.max_samples": 32}
    return {**keys, "eval.max_general_drop": limit, "eval.on_general_drop": "stop"} if limit else keys


def sigterm_once_rows_reach(metrics_path: str, step: int, done: threading.Event) -> threading.Thread:
    """SIGTERM to this process (what `ray job stop` sends) once a stage has logged `step`: the stage's
    own handler (rlhf.train.stop_on_signals) asks its runtime to stop after the step, with a checkpoint."""
    def watch():
        while not done.is_set():
            try:
                with open(metrics_path) as fh:
                    if any(json.loads(line)["step"] >= step for line in fh if line.strip()):
                        os.kill(os.getpid(), signal.SIGTERM)
                        return
            except (OSError, ValueError):
                pass  # not there yet, or a line half written
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def files_and_mtimes(folder) -> dict[str, float]:
    return {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(folder) for name in names}


def test_three_stages_stopped_in_the_second_resume_without_rerunning_the_first(tiny_assets, ray_session, tmp_path):
    data, out = tiny_assets.data, tmp_path / "out"
    file = write_pipeline(tmp_path, [
        {"name": "sft", "config": os.path.join(CONFIGS, "sft_tiny.yaml"), **QUIET, "model.path": str(tiny_assets.base),
         "data.train_path": str(data / "sft_train.jsonl"), "data.eval_path": str(data / "sft_eval.jsonl"),
         "trainer.steps": 2, "eval.every_steps": 0, "ray.policy.replicas": 1},
        {"name": "rm", "config": os.path.join(CONFIGS, "rm_tiny.yaml"), **QUIET, "model.path": str(tiny_assets.base),
         "model.reward_path": str(tiny_assets.reward), "data.train_path": str(data / "prefs_train.jsonl"),
         "data.eval_path": str(data / "prefs_eval.jsonl"), "trainer.steps": 20, "eval.every_steps": 0,
         "ray.reward.replicas": 1},
        {"name": "ppo", "config": os.path.join(CONFIGS, "ppo_tiny.yaml"), **QUIET, **probe(data),
         "model": {"path": "${sft.final}", "reward_path": "${rm.final}"}, "reward.source": "model",
         "data.train_path": str(data / "task_train.jsonl"), "data.eval_path": str(data / "task_eval.jsonl"),
         "algorithm": {"advantage": "grpo", "ppo_epochs": 1}, "rollout": {"engine": "builtin", "samples_per_prompt": 4},
         "trainer": {"steps": 2, "prompts_per_step": 4, "mini_batch_size": 16, "save_hf_model": False},
         "ray": {"policy": {"replicas": 1}, "rollout": {"num_cpus": 1}}},
    ])
    done = threading.Event()
    watcher = sigterm_once_rows_reach(str(out / "rm" / "metrics.jsonl"), 2, done)
    try:
        first = run_pipeline(file)
    finally:
        done.set()
        watcher.join()
    assert (first.outcome, first.stage) == ("interrupted", "rm"), first.message
    assert "--resume" in first.message and first.stop_signal == signal.SIGTERM
    stopped_rm = json.load(open(out / "rm" / "summary.json"))
    assert stopped_rm["stopped"] and 2 <= stopped_rm["steps"] < 20
    assert os.path.isdir(out / "rm" / "checkpoints" / f"step_{stopped_rm['steps']}")
    assert not os.path.exists(out / "ppo")
    partial = open(out / "report.md").read()
    assert "| sft | sft | finished |" in partial and "| rm | rm | interrupted |" in partial and "| ppo | ppo/grpo | pending |" in partial
    sft_files = files_and_mtimes(out / "sft")

    resumed = run_pipeline(file, resume=True)
    assert resumed.outcome == "finished", resumed.message
    assert files_and_mtimes(out / "sft") == sft_files  # the finished stage was not run again
    rm_rows = read_metrics(str(out / "rm"))
    assert [r["step"] for r in rm_rows] == list(range(0, 21))  # continued from its checkpoint, no step twice
    assert json.load(open(out / "rm" / "summary.json"))["steps"] == 20 and os.path.isdir(out / "rm" / "final")
    ppo_config = yaml.safe_load(open(out / "ppo" / "config.yaml"))
    assert ppo_config["model"]["path"] == str(out / "sft" / "final")
    assert ppo_config["model"]["reward_path"] == str(out / "rm" / "final")
    # No stage probed the base before PPO, so the driver did; PPO's drops are measured against it.
    baseline = json.load(open(out / "baseline.json"))
    assert baseline["source"] == "probed on the driver" and baseline["model"] == str(tiny_assets.base)
    assert ppo_config["eval"]["general_baseline"] == {k: baseline[k] for k in ("perplexity", "accuracy")}
    start = read_metrics(str(out / "ppo"))[0]
    expected = general_drop({"eval/general/perplexity": baseline["perplexity"],
                             "eval/general/accuracy": baseline["accuracy"]}, start)[DROP]
    assert start[DROP] == pytest.approx(expected) and start[DROP] > 0  # the SFT stage already moved the model
    report = open(out / "report.md").read()
    for row in ("| sft | sft | finished |", "| rm | rm | finished |", "| ppo | ppo/grpo | finished | eval/reward/mean |"):
        assert row in report
    assert open(out / "report.png", "rb").read(4) == b"\x89PNG"


def test_a_signal_while_a_stage_starts_stops_that_stage_after_its_first_step(tiny_assets, ray_session, tmp_path,
                                                                            monkeypatch):
    """SIGTERM after the stage began, before its run installed its own handler (here: during its preflight):
    the pipeline's handler records it, and the stage's run takes it over, stopping after step 1 with a
    checkpoint instead of running its whole length."""
    import rlhf.preflight

    data, out = tiny_assets.data, tmp_path / "out"
    preflight = rlhf.preflight.check_before_start

    def signal_then_check(cfg, resume):
        os.kill(os.getpid(), signal.SIGTERM)
        return preflight(cfg, resume)

    monkeypatch.setattr(rlhf.preflight, "check_before_start", signal_then_check)
    file = write_pipeline(tmp_path, [
        {"name": "sft", "config": os.path.join(CONFIGS, "sft_tiny.yaml"), **QUIET, "model.path": str(tiny_assets.base),
         "data.train_path": str(data / "sft_train.jsonl"), "data.eval_path": str(data / "sft_eval.jsonl"),
         "trainer.steps": 6, "eval.every_steps": 0, "ray.policy.replicas": 1},
    ])
    result = run_pipeline(file)
    assert (result.outcome, result.stage, result.stop_signal) == ("interrupted", "sft", signal.SIGTERM), result.message
    summary = json.load(open(out / "sft" / "summary.json"))
    assert summary["stopped"] and summary["steps"] == 1
    assert os.path.isdir(out / "sft" / "checkpoints" / "step_1") and not os.path.exists(out / "sft" / "final")


def test_a_harmful_second_stage_is_stopped_by_the_gate_against_the_pipelines_start(tiny_assets, ray_session, tmp_path):
    data, out, limit = tiny_assets.data, tmp_path / "out", 0.15
    sft = {"config": os.path.join(CONFIGS, "sft_gate_tiny.yaml"), **QUIET, **probe(data, limit),
           "data.train_path": str(data / "sft_train.jsonl"), "data.eval_path": str(data / "sft_eval.jsonl"),
           "eval.every_steps": 1}
    file = write_pipeline(tmp_path, [
        {"name": "gentle", **sft, "model.path": str(tiny_assets.base), "trainer": {"steps": 2, "learning_rate": 1e-4}},
        {"name": "harmful", **sft, "model.path": "${gentle.final}",
         "trainer": {"steps": 6, "learning_rate": 3e-3, "save_hf_model": False}},
    ])
    result = run_pipeline(file)
    assert (result.outcome, result.stage) == ("gate_stopped", "harmful"), result.message
    assert f"forgetting gate at stage 'harmful'" in result.message
    assert f"best model within the limit: {out / 'harmful' / 'best'}" in result.message
    # The baseline is the first stage's step 0 (it starts from the base); the second stage is judged against it.
    gentle, harmful = read_metrics(str(out / "gentle")), read_metrics(str(out / "harmful"))
    baseline = json.load(open(out / "baseline.json"))
    assert baseline["source"] == "step 0 of stage gentle"
    assert baseline["perplexity"] == gentle[0]["eval/general/perplexity"]
    base = {"eval/general/perplexity": baseline["perplexity"], "eval/general/accuracy": baseline["accuracy"]}
    for row in harmful:
        assert row[DROP] == pytest.approx(general_drop(base, row)[DROP]), row["step"]
    assert harmful[-1][DROP] > limit and harmful[-1]["step"] < 6 and not os.path.exists(out / "harmful" / "final")
    best = json.load(open(out / "harmful" / "best" / "best.json"))
    assert [r[DROP] for r in harmful if r["step"] == best["step"]][0] <= limit
    report = open(out / "report.md").read()
    assert "| gentle | sft | finished |" in report and "| harmful | sft | stopped by the gate |" in report
    assert f"`{out / 'harmful' / 'best'}`" in report
    # Run again with --resume: the gate's verdict stands, nothing is trained.
    again = run_pipeline(file, resume=True)
    assert (again.outcome, again.stage) == ("gate_stopped", "harmful")
    assert read_metrics(str(out / "harmful")) == harmful


@pytest.mark.parametrize("name", ["pipeline_tiny.yaml", "pipeline_rlaif_tiny.yaml", "pipeline_lora_tiny.yaml"])
def test_shipped_pipelines_pass_every_check_on_the_built_assets(name, tiny_assets, tmp_path, monkeypatch):
    """The shipped pipelines plan and pass every stage's preflight (nothing runs), unedited, run as a user
    runs them: from a checkout whose `.assets/tiny` holds the built assets (here the tests' own, linked in,
    so the check does not depend on assets built by hand in the working tree)."""
    from rlhf.pipeline.checks import check_pipeline
    from rlhf.pipeline.spec import parse_pipeline

    checkout = tmp_path / "checkout"
    (checkout / ".assets").mkdir(parents=True)
    (checkout / ".assets" / "tiny").symlink_to(tiny_assets.root)
    for part in ("configs", "rlhf"):  # the configs name files under both (the judge's rubric is in rlhf/)
        (checkout / part).symlink_to(os.path.abspath(os.path.join(CONFIGS, "..", part)))
    monkeypatch.chdir(checkout)
    file = os.path.join("configs", name)
    plans = {p.name: p for p in check_pipeline(parse_pipeline(yaml.safe_load(open(file)), file), {}, file)}
    rl = plans["ppo"].cfg
    assert rl.eval.task_reward == "rlhf.tasks:letter_reward" and rl.eval.max_general_drop == 0.05
    # SFT trains adapters; RL starts from its merged model; both anchor the pre-training mix to their reference.
    assert plans["sft"].cfg.model.peft_method == "lora" and rl.model.path.endswith(os.path.join("sft", "final", "merged"))
    assert plans["sft"].cfg.algorithm.ptx_target == rl.algorithm.ptx_target == "reference"
    # Human feedback (a reward model trained by the rm stage) against AI feedback (the judge): one key apart.
    if name in ("pipeline_tiny.yaml", "pipeline_lora_tiny.yaml"):
        assert list(plans) == ["sft", "rm", "ppo"] and rl.reward.source == "model"
        assert plans["ppo"].references == {"model.path": "sft", "model.reward_path": "rm"}
        assert rl.model.peft_method == ("lora" if name == "pipeline_lora_tiny.yaml" else None)
    else:
        assert list(plans) == ["sft", "ppo"] and rl.reward.source == "judge"
        assert plans["ppo"].references == {"model.path": "sft"}
