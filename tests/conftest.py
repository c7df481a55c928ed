"""Shared fixtures: one set of tiny assets and one local Ray instance for the whole session.

`make test` runs the tests on two pytest-xdist workers (processes), each with its own local Ray; the
assets and the agent SFT model are built once per run, by whichever worker asks first (`built_once`).
"""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(folder)` once per test run: alone, into a fresh folder; under pytest-xdist, into the run's
    shared temporary folder, the first worker building while the others wait on a file lock."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    shared = tmp_path_factory.getbasetemp().parent  # one per run, above every worker's own basetemp
    folder, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            # A worker whose build failed part-way left a partial folder: start afresh, so that this worker's
            # error (if it fails too) is the build's own, not a confusing one about what the last one left.
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """Tokenizer, policy, reward model and datasets, built once with the real `rlhf assets` code."""
    from rlhf.assets.build import AssetPaths, build_assets

    return AssetPaths.from_dir(built_once(tmp_path_factory, "assets", lambda folder: build_assets(str(folder), seed=0)))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that can share it (start-up costs seconds on 2 cores)."""
    import ray

    from actors.groups import init_local_ray
    from rlhf.train import local_worker_env

    if not ray.is_initialized():
        # As `rlhf train` starts its own: actors that need no other variables start without a runtime_env.
        init_local_ray(local_worker_env(verbose=False), num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def agent_sft_model(tiny_assets, ray_session, tmp_path_factory):
    """The shipped agent SFT stage (configs/agent_sft_tiny.yaml) on the tiny policy: a model that calls
    `calc` and answers, trained once and shared by the agent and the agent-distillation tests."""
    from rlhf.config import load
    from rlhf.train import run_training

    configs = os.path.join(os.path.dirname(__file__), "..", "configs")

    def train(out: Path) -> None:
        run_training(load(os.path.join(configs, "agent_sft_tiny.yaml"), [
            f"model.path={tiny_assets.policy}", f"data.train_path={tiny_assets.data / 'agent_sft_train.jsonl'}",
            f"trainer.output_dir={out}", "logging.progress=false", "trainer.save_steps=0"]))

    return built_once(tmp_path_factory, "agent_sft", train) / "final"
