"""The weight-sync process group: policy rank 0 broadcasts the full weights, bucket by bucket, to every
rollout engine worker (all tensor-parallel ranks of all engines) without the Ray object store.

Pure torch, no Ray, so the trainer, vLLM's worker processes and the built-in engine all import it.
The group is built from its own TCPStore and port, apart from the trainers' DeepSpeed group: gloo on
CPU, nccl on GPU. Both sides hold the same manifest (name, shape, dtype of every tensor, in order) and
plan the same buckets from it, so only raw bytes travel: one flat uint8 buffer per bucket.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable, Iterator

import torch
import torch.distributed as dist

ALIGN_BYTES = 64
"""Every tensor starts at a multiple of this inside its bucket, so a byte slice views as any dtype."""


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the policy's full (merged, gathered) state dict, in the order it is sent."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    """torch dtype name without the prefix, e.g. "float32" (plain strings cross Ray and msgspec)."""

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def nbytes(self) -> int:
        numel = 1
        for d in self.shape:
            numel *= d
        return numel * torch.empty((), dtype=self.torch_dtype).element_size()


@dataclass(frozen=True)
class SyncSettings:
    """How the driver pushes weights: rollout.weight_sync, its bucket size, the timeout and the backend
    (nccl only when the policy and the engines both hold GPUs)."""
    mode: str
    bucket_mb: int
    timeout_s: float
    backend: str
    tensor_parallel_size: int

    @staticmethod
    def from_config(cfg) -> "SyncSettings":
        from rlhf.training.devices import process_group_backend

        both_on_gpus = cfg.ray.policy.num_gpus > 0 and cfg.ray.rollout.num_gpus > 0
        return SyncSettings(cfg.rollout.weight_sync, cfg.rollout.weight_sync_bucket_mb, cfg.ray.collective_timeout_s,
                            process_group_backend(1 if both_on_gpus else 0), cfg.rollout.tensor_parallel_size)


def aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES


def plan_buckets(sizes: list[int], limit_bytes: int) -> list[list[int]]:
    """Consecutive groups of tensor indices, in order, each at most `limit_bytes` (sizes as given);
    a tensor larger than the limit alone gets a bucket of its own."""
    buckets: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, size in enumerate(sizes):
        if current and used + size > limit_bytes:
            buckets.append(current)
            current, used = [], 0
        current.append(index)
        used += size
    if current:
        buckets.append(current)
    return buckets


def plan_spec_buckets(specs: list[TensorSpec], bucket_mb: int) -> list[list[int]]:
    return plan_buckets([aligned(s.nbytes) for s in specs], bucket_mb << 20)


def pack(tensors: list[torch.Tensor], device: torch.device | str, out: torch.Tensor | None = None) -> torch.Tensor:
    """One flat uint8 buffer on `device` holding the tensors' bytes at aligned offsets (a prefix of `out`
    when it is given and large enough: reusing memory skips the page faults of a fresh buffer)."""
    sizes = [aligned(t.numel() * t.element_size()) for t in tensors]
    total = sum(sizes)
    if out is not None and out.numel() >= total and out.device == torch.device(device):
        buffer = out[:total]
    else:
        buffer = torch.empty(total, dtype=torch.uint8, device=device)
    offset = 0
    for tensor, size in zip(tensors, sizes):
        raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        buffer[offset:offset + raw.numel()].copy_(raw)
        offset += size
    return buffer


def unpack(buffer: torch.Tensor, specs: list[TensorSpec]) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) views into `buffer`, laid out as `pack` wrote them."""
    out, offset = [], 0
    for spec in specs:
        raw = buffer[offset:offset + spec.nbytes]
        out.append((spec.name, raw.view(spec.torch_dtype).view(spec.shape)))
        offset += aligned(spec.nbytes)
    return out


def open_group(host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float):
    """A process group of its own (not the default one) over a TCPStore that rank 0 hosts."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout, wait_for_workers=False)
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        group = dist.ProcessGroupNCCL(store, rank, world_size, options)
    else:
        group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
    return group, store


class SyncGroup:
    """One member of the weight-sync group: rank 0 sends, every other rank receives and loads."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float,
                 specs: list[TensorSpec], bucket_mb: int, device: torch.device | str) -> None:
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.group, self._store = open_group(host, port, rank, world_size, backend, timeout_s)
        self.specs = specs
        self.buckets = plan_spec_buckets(specs, bucket_mb)
        self._buffer: torch.Tensor | None = None
        """The largest bucket buffer so far, reused by the next bucket (at most one bucket of memory)."""

    def _broadcast(self, buffer: torch.Tensor) -> None:
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([buffer], options).wait()

    def send(self, buckets: Iterable[list[torch.Tensor]]) -> int:
        """Rank 0: broadcast each bucket's tensors (in plan order); returns the bytes sent."""
        sent = 0
        for index, tensors in zip(self.buckets, buckets, strict=True):
            expected = [self.specs[i] for i in index]
            for spec, tensor in zip(expected, tensors, strict=True):
                if tuple(tensor.shape) != spec.shape:
                    raise ValueError(f"weight sync: {spec.name} has shape {tuple(tensor.shape)}, "
                                     f"the manifest says {spec.shape}")
            buffer = pack([t.to(spec.torch_dtype) for t, spec in zip(tensors, expected)], self.device, self._buffer)
            self._buffer = buffer if self._buffer is None or buffer.numel() > self._buffer.numel() else self._buffer
            self._broadcast(buffer)
            sent += buffer.numel()
        return sent

    def receive(self, reuse_buffer: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """Other ranks: (name, tensor) of each bucket as it arrives (views into the bucket's buffer).

        `reuse_buffer`: the caller copies every tensor before asking for the next one, so one buffer
        serves every bucket and every push; vLLM's loader may keep views until a layer is complete,
        so it gets a fresh buffer per bucket."""
        for index in self.buckets:
            specs = [self.specs[i] for i in index]
            size = sum(aligned(s.nbytes) for s in specs)
            if reuse_buffer and self._buffer is not None and self._buffer.numel() >= size:
                buffer = self._buffer[:size]
            else:
                buffer = torch.empty(size, dtype=torch.uint8, device=self.device)
                if reuse_buffer:
                    self._buffer = buffer
            self._broadcast(buffer)
            yield from unpack(buffer, specs)

    def close(self) -> None:
        self.group = None
        self._store = None
        self._buffer = None
