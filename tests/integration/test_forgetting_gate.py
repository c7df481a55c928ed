"""The forgetting gate end to end: SFT of the pre-trained tiny base on real Ray + DeepSpeed.

A harmful run (high learning rate on the narrow letters task) trips the gate: with `stop` it ends
early and `best/` holds the best evaluated model within the limit, loadable and within it when
probed again outside the run; with `warn` it runs to the end and the metrics show the breach. A
gentle run stays within the limit. `rlhf eval` reproduces a run's own eval numbers for its final
model. A PPO run logs the eval/ keys (held-out reward and the general probe).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil

import pytest

from rlhf.config import load
from rlhf.data.reader import DataError
from rlhf.evaluation.probe import GeneralProbe, run_probe
from rlhf.evaluation.scores import DROP, general_drop
from rlhf.metrics import read_metrics
from rlhf.train import run_training

pytestmark = pytest.mark.slow

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
LIMIT = 0.2


def gate_config(assets, output_dir, *extra):
    data = assets.data
    return load(os.path.join(CONFIGS, "sft_gate_tiny.yaml"), [
        f"model.path={assets.base}", f"data.train_path={data / 'sft_train.jsonl'}",
        f"data.eval_path={data / 'sft_eval.jsonl'}", f"eval.general_text_path={data / 'general_eval.txt'}",
        f"eval.general_prompts_path={data / 'general_prompts.jsonl'}", f"trainer.output_dir={output_dir}",
        f"eval.max_general_drop={LIMIT}", *extra,
    ])


def probe_in_process(cfg, model_path: str) -> dict:
    """The general probe on a saved model, in this process (not through the run's actors)."""
    from rlhf.models.loading import load_causal_lm, load_tokenizer

    probe = GeneralProbe.from_config(cfg.eval, load_tokenizer(model_path))
    return probe.metrics(run_probe(load_causal_lm(model_path), *probe.actor_args()))


def test_pretrained_base_scores_meaningfully_on_the_probe_and_the_random_policy_does_not(tiny_assets, tmp_path):
    cfg = gate_config(tiny_assets, tmp_path)
    base, random_policy = probe_in_process(cfg, str(tiny_assets.base)), probe_in_process(cfg, str(tiny_assets.policy))
    assert base["eval/general/perplexity"] < 80 and base["eval/general/accuracy"] >= 0.15, base
    assert random_policy["eval/general/perplexity"] > 300 and random_policy["eval/general/accuracy"] == 0.0


def test_harmful_run_stops_at_the_gate_and_keeps_the_best_model_within_it(tiny_assets, ray_session, tmp_path):
    cfg = gate_config(tiny_assets, tmp_path, "trainer.learning_rate=0.001", "trainer.steps=30",
                      "eval.every_steps=1", "eval.on_general_drop=stop", "trainer.save_steps=2",
                      "trainer.keep_checkpoints=10")
    summary = run_training(cfg)
    rows = read_metrics(str(tmp_path))
    ev = summary["evaluation"]
    assert ev["gate"] == "stopped" and summary["steps"] < 30, ev
    assert summary["final_model"] is None and not os.path.exists(tmp_path / "final")
    assert rows[-1]["eval/general/over_limit"] == 1 and rows[-1][DROP] > LIMIT
    assert all(r["eval/general/over_limit"] == 0 for r in rows[:-1])
    # best/ is the evaluated point with the lowest held-out loss among those within the limit.
    within = [r for r in rows if r[DROP] <= LIMIT]
    best_row = min(within, key=lambda r: r["eval/sft/loss"])
    assert ev["best_step"] == best_row["step"] > 0 and ev["best_model"] == str(tmp_path / "best")
    assert json.load(open(tmp_path / "best" / "best.json"))["step"] == best_row["step"]
    # Loaded back and probed outside the run, best/ is within the limit and matches what the run logged.
    start = probe_in_process(cfg, str(tiny_assets.base))
    best = probe_in_process(cfg, str(tmp_path / "best"))
    assert general_drop(start, best)[DROP] <= LIMIT
    assert best["eval/general/perplexity"] == pytest.approx(best_row["eval/general/perplexity"], rel=1e-4)
    # The gate's state is in the checkpoint: resumed from step 2, the drops are still measured against step
    # 0's probe (a fresh start would measure against step 3's and never stop), the best point so far is
    # kept, and the run stops at the same step with the same best/.
    out = tmp_path.parent / (tmp_path.name + "_resumed")
    shutil.copytree(tmp_path, out)
    for name in os.listdir(out / "checkpoints"):
        if name != "step_2":
            shutil.rmtree(out / "checkpoints" / name)
    resumed = run_training(dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, output_dir=str(out))),
                           resume=True)
    assert resumed["steps"] == summary["steps"] and resumed["evaluation"]["gate"] == "stopped"
    assert resumed["evaluation"]["best_step"] == ev["best_step"]
    assert resumed["evaluation"]["target_start"] == ev["target_start"]
    again = read_metrics(str(out))
    assert [r["step"] for r in again] == [r["step"] for r in rows]
    for a, b in zip(again[3:], rows[3:]):
        assert a[DROP] == pytest.approx(b[DROP], abs=1e-6) and a["eval/sft/loss"] == pytest.approx(b["eval/sft/loss"],
                                                                                                   abs=1e-6)


def test_harmful_run_with_warn_runs_to_the_end_and_reports_the_breach(tiny_assets, ray_session, tmp_path, caplog):
    # Two ZeRO-3 replicas: the probe runs on sharded weights (every rank runs it, rank 0 answers).
    cfg = gate_config(tiny_assets, tmp_path, "trainer.learning_rate=0.003", "trainer.steps=10",
                      "eval.every_steps=5", "eval.on_general_drop=warn", "trainer.zero_stage=3", "ray.policy.replicas=2")
    with caplog.at_level(logging.WARNING, logger="rlhf.evaluation.tracker"):
        summary = run_training(cfg)
    rows = read_metrics(str(tmp_path))
    assert summary["steps"] == 10 and summary["evaluation"]["gate"] == "warned"
    assert os.path.isdir(tmp_path / "final")
    assert [r["step"] for r in rows if "eval/general/drop" in r] == [0, 5, 10]
    assert rows[-1]["eval/general/over_limit"] == 1 and rows[-1][DROP] > LIMIT
    assert rows[-1]["eval/target/gain"] > 0.3  # the narrow task was learned
    assert any("forgetting gate" in rec.message and "warning only" in rec.message for rec in caplog.records)


def test_gentle_run_stays_within_the_limit_and_rlhf_eval_reproduces_its_numbers(tiny_assets, ray_session, tmp_path):
    from rlhf.cli import main

    cfg = gate_config(tiny_assets, tmp_path / "run", "trainer.learning_rate=0.0001", "trainer.steps=10",
                      "eval.every_steps=5", "eval.on_general_drop=stop")
    summary = run_training(cfg)
    rows = read_metrics(cfg.trainer.output_dir)
    ev = summary["evaluation"]
    assert summary["steps"] == 10 and ev["gate"] == "ok" and ev["general_drop"] <= LIMIT
    assert all(r["eval/general/over_limit"] == 0 for r in rows if "eval/general/over_limit" in r)
    assert ev["target_gain"] > 0.2, ev
    # `rlhf eval` on the saved final model, with the run's own config: the same numbers the run logged.
    config_path = os.path.join(cfg.trainer.output_dir, "config.yaml")
    report_path = tmp_path / "report.json"
    assert main(["eval", "--model", summary["final_model"], "--config", config_path, "--out", str(report_path)]) == 0
    report = json.load(open(report_path))
    for key in ("eval/sft/loss", "eval/general/perplexity", "eval/general/accuracy"):
        assert report["starting_metrics"][key] == pytest.approx(rows[0][key], rel=1e-4), key
        assert report["model_metrics"][key] == pytest.approx(rows[-1][key], rel=1e-4), key
    assert report["changes"][DROP] == pytest.approx(rows[-1][DROP], abs=1e-4) and report["within_limit"]
    assert report["changes"]["eval/target/gain"] == pytest.approx(rows[-1]["eval/target/gain"], abs=1e-4)


def test_eval_rows_shared_with_training_fail_before_any_actor(tiny_assets, tmp_path):
    data = tiny_assets.data
    cfg = gate_config(tiny_assets, tmp_path, f"data.eval_path={data / 'sft_train.jsonl'}")
    with pytest.raises(DataError, match=r"share 462 rows .*sft_train.jsonl:1 = .*sft_train.jsonl:1"):
        run_training(cfg)
    assert not os.path.exists(tmp_path / "placement.json")


def test_ppo_logs_held_out_reward_and_the_general_probe(tiny_assets, ray_session, tmp_path):
    data = tiny_assets.data
    cfg = load(os.path.join(CONFIGS, "ppo_tiny.yaml"), [
        f"model.path={tiny_assets.policy}", f"data.train_path={data / 'task_train.jsonl'}",
        f"data.eval_path={data / 'task_eval.jsonl'}", f"eval.general_text_path={data / 'general_eval.txt'}",
        f"trainer.output_dir={tmp_path}", "trainer.steps=4", "eval.every_steps=2", "algorithm.advantage=grpo",
        "ray.policy.replicas=1", "ray.reference_in_policy=true", "logging.progress=false",
        "eval.samples_per_prompt=2",
    ])
    summary = run_training(cfg)
    rows = read_metrics(str(tmp_path))
    evaluated = [r for r in rows if "eval/reward/mean" in r]
    assert [r["step"] for r in evaluated] == [0, 2, 4]
    assert all(r["eval/samples"] == 2 * 48 for r in evaluated)  # two samples of each held-out prompt
    start = evaluated[0]
    for r in evaluated:
        # Both are measured from the step-0 evaluation: the gain is the held-out reward's relative change,
        # the drop the loss of general ability, 1 - ppl0/ppl (40 -> 50 is 0.2), never below 0.
        gain = (r["eval/reward/mean"] - start["eval/reward/mean"]) / start["eval/reward/mean"]
        assert r["eval/target/gain"] == pytest.approx(gain, abs=1e-9)
        drop = max(0.0, 1 - start["eval/general/perplexity"] / r["eval/general/perplexity"])
        assert r["eval/general/drop"] == pytest.approx(drop, abs=1e-9)
    assert summary["evaluation"]["target"] == "eval/reward/mean" and summary["evaluation"]["gate"] == "ok"


def test_a_mix_anchored_to_the_reference_holds_general_text_the_task_alone_destroys(tiny_assets, ray_session, tmp_path):
    # LoRA SFT of the base on the letters task at a harmful rate, without a pre-training mix and with the
    # corpus anchored to the reference (here the base: the policy with its adapters off). Measured: held-out
    # perplexity 52 -> 215 without, 52 -> 55 anchored, at the same task loss.
    rows = {}
    for name, mix in (("alone", []), ("anchored", [f"data.ptx_path={tiny_assets.data / 'pretrain_corpus.txt'}",
                                                    "algorithm.ptx_coef=5", "algorithm.ptx_target=reference"])):
        cfg = gate_config(tiny_assets, tmp_path / name, "model.lora.rank=8", "model.lora.alpha=16",
                          "trainer.learning_rate=0.01", "trainer.steps=20", "eval.every_steps=20",
                          "eval.on_general_drop=warn", *mix)
        run_training(cfg)
        rows[name] = read_metrics(cfg.trainer.output_dir)
    alone, anchored = rows["alone"], rows["anchored"]
    # Adapters start at zero: at the first step the policy is its reference and the anchor costs nothing.
    assert anchored[1]["ptx/reference_kl"] < 1e-6 < anchored[-1]["ptx/reference_kl"], anchored
    assert "ptx/loss" not in anchored[1]
    for run in (alone, anchored):  # both learn the task
        assert run[-1]["eval/sft/loss"] < 0.5 * run[0]["eval/sft/loss"], run[-1]
    ppl = {k: (r[0]["eval/general/perplexity"], r[-1]["eval/general/perplexity"]) for k, r in rows.items()}
    assert ppl["alone"][1] > 2 * ppl["alone"][0] and ppl["anchored"][1] < 1.15 * ppl["anchored"][0], ppl
