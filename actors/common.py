"""Small pieces every actor needs at start-up."""
from __future__ import annotations

import os
import random

import ray
import torch


# OpenMP's default wait policy spins idle threads for a while before sleeping. Our groups share
# cores (the experience phase runs policy, reference, critic and reward forwards at once; other
# jobs may run beside us), and a spinning thread holds a core its neighbour's parallel region is
# waiting for: on the 2-core machine a 2-thread generate fell from 296 to 10-24 tokens/s beside
# one other busy process, and recovered to 135-141 with PASSIVE (bench/README.md, "Speed work").
# libgomp reads this when it loads, so it must be in the worker's environment from the start.
THREAD_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def worker_env() -> dict[str, str]:
    """Environment variables every actor process starts with; the driver's own settings win."""
    return {key: os.environ.get(key, default) for key, default in THREAD_ENV_DEFAULTS.items()}


def prepare_process(num_cpus: float, seed: int) -> None:
    """Match torch's threads to the CPUs Ray granted, and seed this process."""
    threads = max(1, int(num_cpus))
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    random.seed(seed)
    torch.manual_seed(seed)


def where_am_i() -> dict:
    """Node id, address and granted resources, for the placement log."""
    ctx = ray.get_runtime_context()
    return {
        "node_id": ctx.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
        "placement_group": ctx.get_placement_group_id(),
        "resources": {k: v for k, v in (ctx.get_assigned_resources() or {}).items()},
        "thread_env": {key: os.environ.get(key) for key in THREAD_ENV_DEFAULTS},
    }
