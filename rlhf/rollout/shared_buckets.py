"""The weight-sync group's same-host transport: bucket buffers in shared-memory files.

When every member of the group runs on the CPU of one host and sees the same /dev/shm, rank 0 copies
each tensor straight into a memory-mapped file that every member maps, and the group only carries a
tiny signal per 16 MB written. Over a socket each byte is copied twice more by the kernel (into the socket,
out of it), and on a small machine those copies take the cores the engines' loaders need.

The files are removed from /dev/shm as soon as every member has mapped them, so a crashed process
leaves nothing behind: the memory goes back when the last mapping closes.
"""
from __future__ import annotations

import os
import secrets
import shutil

import torch

SHARED_DIR = "/dev/shm"
ROOM_FACTOR = 2
"""/dev/shm must have this many times the model's bytes free (Ray's object store may live there too)."""


def bucket_file(token: int, position: int) -> str:
    return os.path.join(SHARED_DIR, f"rlhf-weight-sync-{token:x}-{position}")


def new_token(total_bytes: int) -> int:
    """A fresh name for one group's files, or 0 when this host has no room for them."""
    if not os.path.isdir(SHARED_DIR) or shutil.disk_usage(SHARED_DIR).free < ROOM_FACTOR * total_bytes:
        return 0
    return secrets.randbits(62) + 1


def create_buckets(token: int, sizes: list[int]) -> list[torch.Tensor]:
    """Rank 0: one shared file per bucket, the token written at the start of the first as a marker."""
    buffers = [torch.from_file(bucket_file(token, i), shared=True, size=size, dtype=torch.uint8)
               for i, size in enumerate(sizes)]
    buffers[0][:8].view(torch.int64)[0] = token
    return buffers


def open_buckets(token: int, sizes: list[int]) -> list[torch.Tensor] | None:
    """Other ranks: rank 0's files, or None when this process does not see them (another host or
    container, another /dev/shm)."""
    paths = [bucket_file(token, i) for i in range(len(sizes))]
    if not all(os.path.exists(p) and os.path.getsize(p) == size for p, size in zip(paths, sizes)):
        return None
    buffers = [torch.from_file(p, shared=True, size=size, dtype=torch.uint8) for p, size in zip(paths, sizes)]
    return buffers if int(buffers[0][:8].view(torch.int64)[0]) == token else None


def remove_files(token: int, count: int) -> None:
    for position in range(count):
        try:
            os.unlink(bucket_file(token, position))
        except FileNotFoundError:
            pass
