"""A trainer's process group as rlhf.training.distributed forms it, in a fresh one-rank process."""
from __future__ import annotations

import subprocess
import sys

JOIN_ALONE = """
import deepspeed.comm.comm as ds_comm
import torch.distributed as dist
from rlhf.training.distributed import free_port, init_process_group
init_process_group(0, 1, "127.0.0.1", free_port(), timeout_s=30)
print(dist.get_backend(), dist.get_world_size(), ds_comm.cdb.shm_comm_op)
dist.destroy_process_group()
"""


def test_one_rank_group_forms_over_gloo_without_deepspeeds_shared_memory_kernel():
    # The kernel costs a 28 s compile on a fresh machine and serves only DeepSpeed's inference all-reduce.
    done = subprocess.run([sys.executable, "-c", JOIN_ALONE], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-3:] == ["gloo", "1", "None"], done.stdout
