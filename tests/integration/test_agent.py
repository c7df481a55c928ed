"""Multi-turn, tool-using rollouts end to end: GRPO with ToolEnv episodes (configs/agent_tiny.yaml)
survives an environment actor killed mid-run. The SFT-then-GRPO learning bar of the agent task is not
met yet (held-out accuracy 0.31 after SFT fell to 0.19 after 16 GRPO steps), so no test claims it."""
from __future__ import annotations

import os

import pytest

from rlhf.config import load
from rlhf.metrics import read_metrics
from rlhf.train import run_training

pytestmark = pytest.mark.slow
CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def agent_config(assets, out, model_path, *extra):
    return load(os.path.join(CONFIGS, "agent_tiny.yaml"), [
        f"model.path={model_path}", f"data.train_path={assets.data / 'agent_train.jsonl'}",
        f"data.eval_path={assets.data / 'agent_eval.jsonl'}", f"trainer.output_dir={out}",
        "logging.progress=false", "trainer.save_hf_model=false", *extra])


def test_env_actor_killed_mid_run_is_restarted_and_the_run_finishes(tiny_assets, ray_session, tmp_path):
    marker = tmp_path / "env_died"
    cfg = agent_config(tiny_assets, tmp_path / "run", tiny_assets.policy,
                       "rollout.env=tests.integration.fault_envs:DyingOnceToolEnv",
                       f"rollout.env_kwargs.marker={marker}", "trainer.steps=2", "data.eval_path=null",
                       "eval.every_steps=0")
    summary = run_training(cfg)
    assert marker.exists() and summary["steps"] == 2
    metrics = read_metrics(str(tmp_path / "run"))
    assert [m["step"] for m in metrics] == [1, 2]
    assert metrics[-1]["faults/actor_restarts"] >= 1
