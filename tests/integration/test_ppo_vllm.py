"""PPO on the tiny task with two real vLLM engines serving every step's rollouts.

The same learning bar as tests/integration/test_ppo.py; the policy changes every step, so
engine log-probs that keep matching the trainer's prove every weight push landed.
"""
from __future__ import annotations

import json
import os

import pytest
from dependencies import require

from rlhf.metrics import read_metrics
from rlhf.train import run_training

require("vllm")

from test_ppo import STEPS, _mean, tiny_config  # noqa: E402

pytestmark = pytest.mark.slow


def test_ppo_with_two_vllm_engines_learns_and_stays_in_sync(tiny_assets, ray_session, tmp_path):
    cfg = tiny_config(tiny_assets, tmp_path, "rollout.engine=vllm", "rollout.kv_cache_memory_mb=64",
                      "ray.rollout.replicas=2", "ray.rollout.num_cpus=1", "trainer.save_steps=0",
                      "trainer.save_hf_model=false")
    summary = run_training(cfg)
    metrics = read_metrics(str(tmp_path))
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    first, last = _mean(metrics[:10], "reward/mean"), _mean(metrics[-10:], "reward/mean")
    assert last > 1.5 * first and last > first + 0.03, (first, last)
    # Every step sampled from the weights the previous update produced.
    assert max(m["rollout/logprob_abs_diff"] for m in metrics) < 1e-4
    assert all(m["weight_sync/megabytes"] > 1.0 and m["timing/weight_sync_s"] > 0 for m in metrics)
    placement = json.load(open(os.path.join(tmp_path, "placement.json")))
    assert [w["engine"] for w in placement["rollout"]] == ["vllm", "vllm"]
    assert summary["rollout_engine"].startswith("vllm")
