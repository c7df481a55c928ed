"""Small pieces every actor needs at start-up."""
from __future__ import annotations

import os
import random

import ray
import torch


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
    }
