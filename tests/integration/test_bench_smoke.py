"""bench.compare keeps working: each comparison for one step at tiny size, each side as the harness runs it.

Our half always runs (a real `rlhf train` subprocess with its own local Ray, measured over its whole
process tree). TRL's half needs the venvs of bench/setup_trl.sh, which CI does not build (installing
TRL would cost minutes of every CI run): without them it is skipped, saying so.
"""
from __future__ import annotations

import os
import re

import pytest

from bench.compare import REPO, TRL_VENV, merge, run_ours, run_trl
from bench.report import comparison_table
from bench.settings import ALGOS, make_settings
from rlhf.metrics import read_metrics

pytestmark = pytest.mark.slow


def _settings(algo: str, tiny_assets, tmp_path):
    return make_settings(algo, "tiny", "fp32", 1, str(tiny_assets.root), str(tmp_path))


def _check_one_step(result, s) -> None:
    assert result.error is None, result.error
    assert len(result.step_s) == 1 and result.step_s[0] > 0
    assert result.samples == [s.samples_per_step]
    assert result.samples_per_s > 0
    assert result.tree.peak_rss_mb > 100 and result.tree.peak_pss_mb > 0


@pytest.mark.parametrize("algo", ALGOS)
def test_ours_half(algo, tiny_assets, tmp_path):
    s = _settings(algo, tiny_assets, tmp_path)
    result = run_ours(s, str(tmp_path), timeout_s=600, overrides=[])
    _check_one_step(result, s)
    # The reported reward is the run's own first-step number (the DPO side reports its preference accuracy).
    row = read_metrics(os.path.join(str(tmp_path), "ours"))[0]
    assert result.rewards[0] == row["rewards/accuracy" if algo == "dpo" else "reward/mean"]
    assert result.tree.peak_processes > 3  # the driver, Ray's own processes and the actor groups
    assert any(name.startswith("ray::") for name in result.tree.peak_by_name_mb)
    if algo != "dpo":
        assert {name for name, _, _ in result.phases} >= {"generate", "experience", "train", "weight_sync", "step"}
        work = result.phase_gflop  # the useful work of each phase, from the run's logged lengths
        assert set(work) == {"generate", "experience", "train", "step"} and min(work.values()) > 0
        assert work["step"] == pytest.approx(work["generate"] + work["experience"] + work["train"])
        assert result.tokens[0] > 0


@pytest.mark.parametrize("algo", ALGOS)
def test_trl_half(algo, tiny_assets, tmp_path):
    venv = os.path.join(REPO, "bench", ".venvs", TRL_VENV[algo])
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        pytest.skip(f"no TRL venv at {venv} (bash bench/setup_trl.sh builds it; CI does not)")
    s = _settings(algo, tiny_assets, tmp_path)
    result = run_trl(s, str(tmp_path), timeout_s=600)
    _check_one_step(result, s)
    assert 0.0 <= result.rewards[0] <= 1.0  # TRL's side scores the same letters reward (or accuracy)
    assert result.tokens[0] > 0


def test_rollout_bench_measures_the_builtin_engine_and_a_weight_push(tiny_assets):
    """bench.rollout's measurement (its tokens/s decide the crossover behind `engine: auto`), on the tiny policy."""
    from bench.rollout import build, measure
    from rlhf.models.loading import load_causal_lm

    path = str(tiny_assets.policy)
    engine = build("builtin", path)
    result = measure(engine, path, [4], new_tokens=8, repeats=1)
    assert 0 < result[4] < 1e7  # generated tokens per second, a real finite rate
    state_mb = sum(t.numel() * t.element_size() for t in load_causal_lm(path).state_dict().values()) / 2**20
    assert result["sync_mb"] == pytest.approx(state_mb, rel=0.01)  # the whole policy was pushed
    assert result["sync_ms_per_mb"] > 0


def test_peft_memory_bench_trains_each_variant_with_the_right_trainable_share(tiny_assets):
    from bench.peft_memory import one_variant

    rows = {v: one_variant(str(tiny_assets.policy), v, batch=2, seq=16, steps=2) for v in ("full", "lora", "qlora")}
    full, lora, qlora = rows["full"], rows["lora"], rows["qlora"]
    assert 0 < lora["trainable_m"] < 0.5 * full["trainable_m"]
    assert qlora["trainable_m"] == pytest.approx(lora["trainable_m"])  # the same adapters on a 4-bit base
    for row in rows.values():
        assert row["peak_rss_mb"] > 0 and row["step_s"] > 0


def test_weight_sync_bench_pushes_the_policy_through_both_paths(tiny_assets, ray_session):
    """bench.weight_sync (issue 14's MB/s figures) on the tiny policy and the built-in engine."""
    from bench.weight_sync import measure
    from rlhf.models.loading import load_causal_lm

    lines = measure(str(tiny_assets.policy), "builtin", repeats=1)
    state_mb = sum(t.numel() * t.element_size() for t in load_causal_lm(str(tiny_assets.policy)).state_dict().values())
    rows = [dict(re.findall(r"([\w/]+)=\s*(\S+)", line)) for line in lines]
    assert [(row["engine"], row["path"], row.get("over")) for row in rows] == [
        ("builtin", "object_store", None), ("builtin", "collective", "shared_memory"), ("builtin", "collective", "gloo")]
    for fields in rows:
        assert float(fields["MB"]) == pytest.approx(state_mb / 2**20, rel=0.05)  # the whole policy, each push
        assert float(fields["MB/s"]) > 0


def test_gpu_check_runs_its_checks_on_cpu_and_its_script_skips_without_a_gpu(tiny_assets):
    """bench/gpu_check.sh waits for a session with a GPU; its checks run here on CPU so they keep working."""
    import subprocess
    import sys

    script = subprocess.run(["bash", os.path.join(REPO, "bench", "gpu_check.sh")], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert script.returncode == 0 and script.stdout.strip() == "no GPU: skipped", script.stdout + script.stderr
    command = [sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--assets", str(tiny_assets.root)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    checked = [line.split(":")[0] for line in done.stdout.splitlines() if line.startswith("ok  ")]
    for name in ("rollout engine (built-in)", "reference", "reward model", "ZeRO-2", "ZeRO-3", "LoRA", "critic", "DPO"):
        assert f"ok  {name}" in checked, (name, done.stdout)
    assert "gpu check passed" in done.stdout
