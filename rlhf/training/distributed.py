"""Process-group set-up for trainer replicas living in Ray actors (no deepspeed launcher)."""
from __future__ import annotations

import os
import socket
from datetime import timedelta


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def init_process_group(rank: int, world_size: int, master_addr: str, master_port: int, timeout_s: float,
                       backend: str = "gloo") -> None:
    """Join the replicas' process group.

    `deepspeed.initialize` asserts LOCAL_RANK is set, and the launcher that normally sets these
    is not used under Ray. Ray gives each GPU actor its own CUDA_VISIBLE_DEVICES, so the local
    rank is always 0. A short collective timeout makes a dead replica noticed in seconds. `backend`
    comes from the configured resources (rlhf.training.devices.process_group_backend).
    """
    import deepspeed
    import deepspeed.ops

    # On CPU, DeepSpeed's backend would JIT-compile a shared-memory all-reduce kernel here (28 s on a fresh
    # 2-core machine, before the first step of its first run) that only its inference all-reduce uses;
    # training collectives go through the process group. DeepSpeed keeps edits to this dict.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    os.environ.update(
        RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE=str(world_size),
        MASTER_ADDR=master_addr, MASTER_PORT=str(master_port),
    )
    deepspeed.init_distributed(dist_backend=backend, timeout=timedelta(seconds=timeout_s))
