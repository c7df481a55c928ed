"""Which variables an actor's own runtime_env carries when its worker inherits a local Ray's environment."""
from __future__ import annotations

import torch

from actors.common import engine_group_env, worker_env
from actors.groups import runtime_env_vars
from rlhf import quiet
from rlhf.train import local_worker_env


def test_an_actor_wanting_only_what_it_inherits_needs_no_runtime_env():
    inherited = local_worker_env(verbose=False)
    assert runtime_env_vars({**worker_env(0), **quiet.actor_env(False)}, inherited) == {}


def test_only_the_difference_travels():
    inherited = local_worker_env(verbose=False)
    engine = {**worker_env(0), **quiet.actor_env(False), **engine_group_env("vllm", True, 1)}
    assert runtime_env_vars(engine, inherited) == {"GOMP_SPINCOUNT": "20000"}
    # A verbose run on a quiet run's Ray (one Ray for a pipeline's stages): the quiet switches are emptied.
    verbose = runtime_env_vars({**worker_env(0), **quiet.actor_env(True)}, inherited)
    assert verbose == {key: "" for key in quiet.actor_env(False)}
    # A GPU actor keeps its GPUs visible (on a machine with GPUs nothing hides them in the first place).
    assert "CUDA_VISIBLE_DEVICES" not in runtime_env_vars(worker_env(1), {k: v for k, v in inherited.items()
                                                                        if k != "CUDA_VISIBLE_DEVICES"})


def test_with_nothing_inherited_everything_travels():
    wanted = {**worker_env(0), **quiet.actor_env(False)}
    assert runtime_env_vars(wanted, {}) == wanted


def test_a_local_ray_inherits_what_every_actor_starts_with():
    inherited = local_worker_env(verbose=False)
    assert inherited["OMP_WAIT_POLICY"] and inherited["TOKENIZERS_PARALLELISM"] == "false"
    # Ray counts the GPUs it sees when it starts: only where there are none may its workers inherit the variable.
    assert inherited.get("CUDA_VISIBLE_DEVICES") == (None if torch.cuda.is_available() else "")
    assert quiet.actor_env(False).items() <= inherited.items()


def test_thread_teams_that_work_alone_spin_briefly():
    from actors.common import SHORT_SPIN_THREAD_ENV, trained_group_env

    assert trained_group_env(2) == SHORT_SPIN_THREAD_ENV and trained_group_env(1) == {}
    assert engine_group_env("vllm", True, 1) == SHORT_SPIN_THREAD_ENV  # vLLM's decode loop, whatever the threads
    assert engine_group_env("vllm", False, 2) == {}  # vLLM's own processes
    assert engine_group_env("builtin", True, 2) == SHORT_SPIN_THREAD_ENV and engine_group_env("builtin", True, 1) == {}
