"""Critic-free estimators run through the same loop with no critic group; colocated placement; ZeRO-3."""
from __future__ import annotations

import json
import math
import os

import pytest

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
        "trainer.mini_batch_size=16", "trainer.zero_stage=3",
        "ray.policy.replicas=2", "ray.colocate=true",
        # A tiny target: the measured KL is above it, so the adaptive coefficient must grow.
        "algorithm.kl.target=0.01", "algorithm.kl.init_coef=0.01",
        "logging.progress=false",
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
