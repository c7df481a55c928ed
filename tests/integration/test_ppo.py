"""End-to-end PPO on real Ray actor groups, real DeepSpeed ZeRO-2 and the real tiny task.

One learning run is shared by several checks (learning, adaptive KL, log-prob agreement
after weight pushes, outputs, checkpoints); the resume test restarts from its step-44
checkpoint. Each run costs about a minute of actor start-up on 2 cores, so runs are few.
"""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from rlhf.config import load
from rlhf.metrics import read_metrics
from rlhf.train import run_training
from tests.integration.resume_check import resume_matches_the_run

pytestmark = pytest.mark.slow

STEPS = 50
"""Last-10 / first-10 reward of this run with 16-row micro-batches: 1.70 at step 50, 1.62 at step 60."""
RESUME_AT = STEPS - 6
"""The run's first checkpoint, where the resume test picks it up (late: the resumed part costs run time)."""
CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "ppo_tiny.yaml")


def tiny_config(assets, output_dir, *extra):
    return load(CONFIG, [
        f"model.path={assets.policy}",
        f"data.train_path={assets.data / 'task_train.jsonl'}",
        f"trainer.output_dir={output_dir}",
        f"trainer.steps={STEPS}",
        f"trainer.save_steps={RESUME_AT}",
        "trainer.zero_stage=2",
        "ray.policy.replicas=2",
        "logging.progress=false",
        # The policy recomputes the engine's log-probs, so every step measures the sync gap.
        "algorithm.old_logprobs=recompute",
        *extra,
    ])


@pytest.fixture(scope="module")
def ppo_run(tiny_assets, ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo")
    cfg = tiny_config(tiny_assets, out)
    summary = run_training(cfg)
    return cfg, summary, read_metrics(str(out))


def _mean(rows, key):
    return sum(r[key] for r in rows) / len(rows)


def test_ppo_four_groups_learn_the_task(ppo_run):
    cfg, summary, metrics = ppo_run
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    first, last = _mean(metrics[:10], "reward/mean"), _mean(metrics[-10:], "reward/mean")
    # The letters reward starts near chance (~0.06); a learning run clearly lifts it.
    assert last > 1.5 * first and last > first + 0.03, (first, last)
    assert all(math.isfinite(m["kl/mean"]) for m in metrics)
    placement = json.load(open(os.path.join(cfg.trainer.output_dir, "placement.json")))
    assert set(placement) == {"policy", "critic", "reference", "reward", "rollout"}
    assert len(placement["policy"]) == 2
    # Every actor process started with the passive OpenMP wait policy (actors/common.py says why).
    assert {w["thread_env"]["OMP_WAIT_POLICY"] for where in placement.values() for w in where} == {"PASSIVE"}
    # ...and runs torch on as many threads as the CPUs Ray granted it (the engine 2, every other actor 1).
    threads = {name: [w["torch_threads"] for w in where] for name, where in placement.items()}
    assert threads == {name: [max(1, int(w["resources"]["CPU"])) for w in where] for name, where in placement.items()}
    assert threads["rollout"] == [2], threads


def test_metrics_have_the_documented_keys(ppo_run):
    _, _, metrics = ppo_run
    required = {
        "step", "reward/mean", "reward/std", "kl/mean", "kl/coef", "policy/loss", "policy/clipfrac",
        "policy/approx_kl", "policy/entropy", "critic/loss", "response_length/mean", "timing/generate_s",
        "timing/experience_s", "timing/train_s", "timing/weight_sync_s", "timing/step_s",
        "throughput/tokens_per_s",
    }
    for row in metrics:
        assert required <= set(row), required - set(row)
    # Start-up (run start to the step loop) is reported once, on the first step, and in the summary.
    assert [row["step"] for row in metrics if "timing/startup_s" in row] == [1]
    startup = metrics[0]["timing/startup_s"]
    assert startup == ppo_run[1]["startup_s"] and startup > 0


def test_adaptive_kl_moves_coefficient_toward_target(ppo_run):
    cfg, _, metrics = ppo_run
    target = cfg.algorithm.kl.target
    for now, nxt in zip(metrics, metrics[1:]):
        if now["kl/mean"] < target:
            assert nxt["kl/coef"] < now["kl/coef"]
        elif now["kl/mean"] > target:
            assert nxt["kl/coef"] > now["kl/coef"]


def test_adaptive_kl_grows_the_coefficient_when_kl_exceeds_the_target(tiny_assets, ray_session, tmp_path):
    """PPO with a critic and a target far below any KL the policy reaches once it moves: from step 2
    on the measured KL exceeds the target, so the controller must raise the coefficient every step.
    The same run carries the pre-training mix (PPO-ptx) through PPO's updates: the policy's micro-batches
    add its loss, the critic's do not."""
    steps, target = 6, 1e-4
    cfg = tiny_config(tiny_assets, tmp_path, f"trainer.steps={steps}", "trainer.save_steps=0",
                      "ray.policy.replicas=1", f"algorithm.kl.target={target}", "trainer.save_hf_model=false",
                      "ray.reference_in_policy=true",  # one process fewer: the layout is the shared run's
                      f"data.ptx_path={tiny_assets.data / 'pretrain_corpus.txt'}", "algorithm.ptx_coef=0.5")
    assert cfg.algorithm.uses_critic
    run_training(cfg)
    metrics = read_metrics(str(tmp_path))
    ptx = [m["ptx/loss"] for m in metrics]
    assert all(math.isfinite(v) and 3.0 < v < 10.0 for v in ptx), ptx  # a next-token loss of real text
    grew = 0
    for now, nxt in zip(metrics, metrics[1:]):
        if now["kl/mean"] > target:
            assert nxt["kl/coef"] > now["kl/coef"], (now, nxt)
            grew += 1
    assert grew >= steps - 2, [m["kl/mean"] for m in metrics]
    assert metrics[-1]["kl/coef"] > cfg.algorithm.kl.init_coef


def test_the_mix_anchored_to_the_replicas_reference_copy_starts_at_zero_and_grows(tiny_assets, ray_session, tmp_path):
    """`algorithm.ptx_target: reference` with `ray.reference_in_policy`: the anchor is the policy replica's
    frozen copy of the reference. One optimizer step per PPO step (one epoch, one mini-batch), so every
    micro-batch of step 1 sees the untrained policy, equal to that copy: KL 0; after updates it is not."""
    cfg = tiny_config(tiny_assets, tmp_path, "trainer.steps=3", "trainer.save_steps=0", "ray.policy.replicas=1",
                      "trainer.save_hf_model=false", "ray.reference_in_policy=true", "algorithm.ppo_epochs=1",
                      "trainer.mini_batch_size=64", f"data.ptx_path={tiny_assets.data / 'pretrain_corpus.txt'}",
                      "algorithm.ptx_coef=1", "algorithm.ptx_target=reference")
    run_training(cfg)
    anchor = [m["ptx/reference_kl"] for m in read_metrics(str(tmp_path))]
    assert anchor[0] < 1e-6 and all(v > 1e-5 for v in anchor[1:]), anchor
    with open(tmp_path / "placement.json") as fh:
        assert "reference" not in json.load(fh)  # the copy is the policy's: no reference group


def test_rollout_logprobs_match_policy_after_weight_push(ppo_run):
    _, _, metrics = ppo_run
    # Step 1 samples from the start weights; every later step from weights pushed by the policy.
    # The policy recomputes the engine's sampled tokens' log-probs; float32 agreement is exact-ish.
    for row in metrics[1:]:
        assert row["rollout/logprob_abs_diff"] < 1e-4, row["step"]


def test_engine_killed_mid_run_is_refilled_and_the_retried_steps_equal_the_uninterrupted_run(
        ppo_run, tiny_assets, ray_session, tmp_path, monkeypatch):
    """The engine is SIGKILLed after step 2's weight push (by the reward function while it scores the step-2
    evaluation, so at the same point every time). Ray restarts it with the base weights and serves step 3's
    generation from it; the runtime must notice, push the current weights and retry the phase, which must
    give what the uninterrupted run got (seeded sampling): every step's training numbers are the shared
    run's (the held-out evaluation, which the shared run does not do, must not change them either)."""
    from rlhf import quiet
    from tests.integration.fault_rewards import PLACEMENT_ENV

    actor_env = quiet.actor_env
    monkeypatch.setattr(quiet, "actor_env",
                        lambda verbose: {**actor_env(verbose), PLACEMENT_ENV: str(tmp_path / "placement.json")})
    steps = 4
    cfg = tiny_config(tiny_assets, tmp_path, f"trainer.steps={steps}", "trainer.save_steps=0",
                      "trainer.save_hf_model=false", f"data.eval_path={tiny_assets.data / 'task_eval.jsonl'}",
                      "eval.every_steps=2",
                      "reward.function=tests.integration.fault_rewards:letter_reward_killing_the_engine")
    run_training(cfg)
    rows, straight = read_metrics(str(tmp_path)), ppo_run[2][:steps]
    assert [r["step"] for r in rows if "eval/reward/mean" in r] == [0, 2, 4]
    faulted = [r for r in rows if r["step"] >= 1]
    assert [r["step"] for r in faulted] == list(range(1, steps + 1))
    # Counted on the step whose phase met the restarted engine (step 3), not later.
    assert [r["faults/actor_restarts"] for r in faulted] == [0, 0, 1, 1]
    compared = [k for k in straight[0] if not k.startswith(("timing/", "throughput/", "faults/", "memory/"))]
    assert {"reward/mean", "kl/mean", "policy/loss", "critic/loss", "rollout/logprob_abs_diff"} <= set(compared)
    for a, b in zip(faulted, straight):
        differ = {k: (a.get(k), b[k]) for k in compared if a.get(k) != pytest.approx(b[k], rel=1e-5, abs=1e-6)}
        assert not differ, (a["step"], differ)


def test_outputs_final_model_and_checkpoints(ppo_run):
    from transformers import AutoModelForCausalLM

    cfg, summary, _ = ppo_run
    final = dict(AutoModelForCausalLM.from_pretrained(summary["final_model"]).named_parameters())
    start = dict(AutoModelForCausalLM.from_pretrained(cfg.model.path).named_parameters())
    assert final.keys() == start.keys()
    assert all(torch.isfinite(p).all() for p in final.values())
    # The trained weights, not the start's: every weight matrix moved.
    moved = [name for name, p in final.items() if p.dim() == 2 and not torch.equal(p, start[name])]
    assert len(moved) == sum(p.dim() == 2 for p in final.values()), moved
    ckpts = sorted(os.listdir(os.path.join(cfg.trainer.output_dir, "checkpoints")))
    assert ckpts == [f"step_{RESUME_AT}", f"step_{STEPS}"]
    assert os.path.isfile(os.path.join(cfg.trainer.output_dir, "checkpoints", f"step_{STEPS}", "manifest.json"))


def test_resume_continues_where_the_uninterrupted_run_was(ppo_run, tmp_path):
    cfg, _, straight = ppo_run
    # A run "stopped" right after its first checkpoint (step_44): the same rewards follow the resume, and
    # the next KL coefficient is the uninterrupted run's.
    resumed = resume_matches_the_run(cfg, straight, RESUME_AT, ("reward/mean",), tmp_path, tolerance=1e-4)
    assert resumed[RESUME_AT]["kl/coef"] == pytest.approx(straight[RESUME_AT]["kl/coef"], rel=1e-9)


def test_async_generation_samples_one_update_behind(ppo_run, tiny_assets, ray_session, tmp_path):
    # Off-by-one: step t+1 is generated (with the weights before step t's update) while step t
    # trains, so every batch after the first is one update old. 12 steps: the invariant, not learning.
    steps = 12
    cfg = tiny_config(tiny_assets, tmp_path, "rollout.async_generation=true", "trainer.save_steps=0",
                      "trainer.save_hf_model=false", "algorithm.old_logprobs=auto", f"trainer.steps={steps}",
                      "ray.reference_in_policy=true")
    summary = run_training(cfg)
    metrics = read_metrics(str(tmp_path))
    assert summary["old_logprobs"] == "recomputed by the policy"  # auto: one update old, so recomputed
    assert [m["rollout/policy_lag"] for m in metrics] == [0] + [1] * (steps - 1)
    # The lag is real: the engine's log-probs trail the policy's by an update from step 2 on, where the
    # synchronous run's agree to float error at every step.
    synchronous = ppo_run[2][:steps]
    assert metrics[0]["rollout/logprob_abs_diff"] < 1e-4
    assert all(m["rollout/logprob_abs_diff"] > 1e-3 for m in metrics[1:]), [m["rollout/logprob_abs_diff"] for m in metrics]
    assert all(m["rollout/logprob_abs_diff"] < 1e-4 for m in synchronous)
    assert all(math.isfinite(m["reward/mean"]) for m in metrics)
