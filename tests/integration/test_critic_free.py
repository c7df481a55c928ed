"""Critic-free estimators run through the same loop with no critic group; colocated placement; ZeRO-3; bf16."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from rlhf.config import load
from rlhf.metrics import read_metrics
from rlhf.train import run_training

pytestmark = pytest.mark.slow
CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "ppo_tiny.yaml")


def test_grpo_colocated_zero3_without_critic(tiny_assets, ray_session, tmp_path):
    cfg = load(CONFIG, [
        f"model.path={tiny_assets.policy}",
        f"data.train_path={tiny_assets.data / 'task_train.jsonl'}",
        f"trainer.output_dir={tmp_path}",
        "algorithm.advantage=grpo",
        "trainer.steps=4", "trainer.save_steps=0", "trainer.prompts_per_step=4",
        "trainer.mini_batch_size=16", "trainer.micro_batch_size=8", "trainer.zero_stage=3",
        "ray.policy.replicas=2", "ray.colocate=true",
        # A tiny target: the measured KL is above it, so the adaptive coefficient must grow.
        "algorithm.kl.target=0.01", "algorithm.kl.init_coef=0.01",
        "logging.progress=false", "algorithm.old_logprobs=recompute",
    ])
    run_training(cfg)
    placement = json.load(open(tmp_path / "placement.json"))
    assert "critic" not in placement
    groups = {w["placement_group"] for where in placement.values() for w in where}
    assert len(groups) == 1  # colocated: every actor in one placement group
    metrics = read_metrics(str(tmp_path))
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    coefs = [m["kl/coef"] for m in metrics]
    # Step 1 samples from the reference itself (KL 0 < target: the coefficient shrinks once);
    # from step 2 on the policy has moved, KL > target, and the coefficient grows every step.
    assert metrics[0]["kl/mean"] == 0.0 and coefs[1] < coefs[0]
    assert all(b > a for a, b in zip(coefs[1:], coefs[2:])), coefs
    for row in metrics:
        assert math.isfinite(row["policy/loss"]) and row["critic/loss"] == 0.0
    # ZeRO-3 shards are gathered for the push: the engine samples with exactly the trained weights.
    for row in metrics[1:]:
        assert row["rollout/logprob_abs_diff"] < 1e-4


def _one_update_per_batch(assets, out, old_logprobs):
    return load(CONFIG, [
        f"model.path={assets.policy}", f"data.train_path={assets.data / 'task_train.jsonl'}",
        f"trainer.output_dir={out}", "algorithm.advantage=grpo", "algorithm.ppo_epochs=1",
        "trainer.steps=3", "trainer.save_steps=0", "trainer.prompts_per_step=4", "trainer.mini_batch_size=32",
        "ray.policy.replicas=1", "trainer.save_hf_model=false", "logging.progress=false",
        "ray.reference_in_policy=true", f"algorithm.old_logprobs={old_logprobs}",
    ])


def test_reused_engine_logprobs_train_like_recomputed_ones(tiny_assets, ray_session, tmp_path):
    # One optimizer step per batch: the ratio at that step is exactly 1 when the old log-probs are
    # the policy's own, so the reused engine log-probs must give approx_kl ~ 0 and no clipping, and
    # the same losses and samples as a run that recomputes them (one policy forward fewer per step).
    runs = {}
    for mode in ("auto", "recompute"):
        summary = run_training(_one_update_per_batch(tiny_assets, tmp_path / mode, mode))
        runs[mode] = (summary, read_metrics(str(tmp_path / mode)))
    (reused_summary, reused), (recomputed_summary, recomputed) = runs["auto"], runs["recompute"]
    assert reused_summary["old_logprobs"] == "rollout engine"
    assert recomputed_summary["old_logprobs"] == "recomputed by the policy"
    assert len(reused) == len(recomputed) == 3
    for a, b in zip(reused, recomputed):
        assert "rollout/logprob_abs_diff" not in a and b["rollout/logprob_abs_diff"] < 1e-4
        assert a["policy/approx_kl"] < 1e-6 and a["policy/clipfrac"] == 0.0
    # Step 1 samples the same tokens from the same weights on both sides (later steps may flip a
    # sampled token, their weights differing by float noise).
    a, b = reused[0], recomputed[0]
    assert a["reward/mean"] == b["reward/mean"] and a["response_length/mean"] == b["response_length/mean"]
    assert a["policy/loss"] == pytest.approx(b["policy/loss"], abs=1e-5)
    assert a["kl/mean"] == pytest.approx(b["kl/mean"], abs=1e-5)


def test_bf16_training_end_to_end(tiny_assets, ray_session, tmp_path):
    """model.dtype: bfloat16 runs every model in bf16 (trainer, engine, reference, reward) and saves bf16."""
    from safetensors.torch import load_file

    cfg = load(CONFIG, [
        f"model.path={tiny_assets.policy}", f"data.train_path={tiny_assets.data / 'task_train.jsonl'}",
        f"trainer.output_dir={tmp_path}", "model.dtype=bfloat16", "algorithm.advantage=grpo",
        "trainer.steps=4", "trainer.save_steps=0", "trainer.prompts_per_step=4", "trainer.mini_batch_size=16",
        "trainer.micro_batch_size=8",
        "ray.policy.replicas=2", "logging.progress=false", "algorithm.old_logprobs=recompute",
    ])
    summary = run_training(cfg)
    metrics = read_metrics(str(tmp_path))
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all(m["train/skipped_update"] == 0 and math.isfinite(m["policy/loss"]) for m in metrics)
    assert metrics[0]["kl/mean"] == 0.0 and metrics[-1]["kl/mean"] != 0.0  # the trained policy left its start
    # The engine samples from the weights just trained, in the same precision: a bf16-sized gap (measured
    # 2e-4 to 5e-4 per token), far below a stale engine's after a step (the policy moved ~2 nats per sample).
    assert all(m["rollout/logprob_abs_diff"] < 0.01 for m in metrics), [m["rollout/logprob_abs_diff"] for m in metrics]
    final = load_file(os.path.join(summary["final_model"], "model.safetensors"))
    assert {t.dtype for t in final.values()} == {torch.bfloat16}
    start = load_file(os.path.join(tiny_assets.policy, "model.safetensors"))
    assert any(not torch.equal(final[k], start[k].to(torch.bfloat16)) for k in final)
