"""Every mode gets PPO's supervision: RLAIF and on-policy distillation survive a killed rollout engine
and a killed reward (or teacher) actor mid-run; Ray restarts them, the engines get the current
weights back, the phase is retried, and the restarts are counted (RELIABILITY 2 for every mode)."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from rlhf.config import load
from rlhf.metrics import read_metrics
from rlhf.train import run_training

pytestmark = pytest.mark.slow

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
STEPS = 4


def _config(mode: str, assets, out):
    extra = {"rlaif": ["reward.source=function", "rollout.samples_per_prompt=4", "trainer.prompts_per_step=4",
                       "trainer.mini_batch_size=4", "trainer.micro_batch_size=2"],
             "distill": [f"model.teacher_path={assets.teacher}", "rollout.samples_per_prompt=2",
                         "trainer.prompts_per_step=4", "trainer.mini_batch_size=8", "trainer.micro_batch_size=4"]}
    return load(os.path.join(CONFIGS, f"{mode}_tiny.yaml"), [
        f"model.path={assets.policy}", f"data.train_path={assets.data / 'task_train.jsonl'}",
        f"data.eval_path={assets.data / 'task_eval.jsonl'}", f"trainer.output_dir={out}",
        f"trainer.steps={STEPS}", "trainer.save_hf_model=false", "eval.every_steps=0", "ray.policy.replicas=1",
        "logging.progress=false", *extra[mode]])


def _steps_done(out) -> int:
    try:
        return sum(1 for line in open(os.path.join(out, "metrics.jsonl")) if json.loads(line)["step"] > 0)
    except FileNotFoundError:
        return 0


def _kill_first(out, role: str) -> None:
    with open(os.path.join(out, "placement.json")) as fh:
        os.kill(json.load(fh)[role][0]["pid"], signal.SIGKILL)


@pytest.mark.parametrize("mode,scorer", [("rlaif", "reward"), ("distill", "teacher")])
def test_engine_and_scorer_killed_mid_run_are_restarted_and_counted(tiny_assets, ray_session, tmp_path, mode,
                                                                    scorer):
    cfg = _config(mode, tiny_assets, tmp_path)
    killed = []

    def killer():
        for after_step, role in ((1, "rollout"), (2, scorer)):
            while _steps_done(tmp_path) < after_step:
                time.sleep(0.05)
            _kill_first(tmp_path, role)
            killed.append(role)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = run_training(cfg)
    thread.join(timeout=10)
    rows = [r for r in read_metrics(str(tmp_path)) if r["step"] > 0]
    assert killed == ["rollout", scorer] and summary["steps"] == STEPS
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert rows[-1]["faults/actor_restarts"] == 2, [r["faults/actor_restarts"] for r in rows]
    assert rows[0]["faults/actor_restarts"] == 0
