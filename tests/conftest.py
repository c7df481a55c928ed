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
