"""Shared fixtures: one set of tiny assets and one local Ray instance for the whole session."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """Tokenizer, policy, reward model and datasets, built once with the real `rlhf assets` code."""
    from rlhf.assets.build import build_assets

    return build_assets(str(tmp_path_factory.mktemp("assets")), seed=0)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that can share it (start-up costs seconds on 2 cores)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def agent_sft_model(tiny_assets, ray_session, tmp_path_factory):
    """The shipped agent SFT stage (configs/agent_sft_tiny.yaml) on the tiny policy: a model that calls
    `calc` and answers, trained once and shared by the agent and the agent-distillation tests."""
    from rlhf.config import load
    from rlhf.train import run_training

    out = tmp_path_factory.mktemp("agent_sft")
    configs = os.path.join(os.path.dirname(__file__), "..", "configs")
    run_training(load(os.path.join(configs, "agent_sft_tiny.yaml"), [
        f"model.path={tiny_assets.policy}", f"data.train_path={tiny_assets.data / 'agent_sft_train.jsonl'}",
        f"trainer.output_dir={out}", "logging.progress=false", "trainer.save_steps=0"]))
    return out / "final"
