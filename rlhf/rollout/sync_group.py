"""The weight-sync process group: policy rank 0 broadcasts the full weights, bucket by bucket, to every
rollout engine worker (all tensor-parallel ranks of all engines) without the Ray object store.

Pure torch, no Ray, so the trainer, vLLM's worker processes and the built-in engine all import it.
The group is built from its own TCPStore and port, apart from the trainers' DeepSpeed group: gloo on
CPU, nccl on GPU. Both sides hold the same manifest (name, shape, dtype of every tensor, in order) and
plan the same buckets from it, so only raw bytes travel. Each tensor is its own asynchronous broadcast:
the sender sends its tensors where they lie (no packing copy), and a receiver loads tensor i while
tensor i + 1 is still on the wire, into its bucket's one flat buffer. Members on the CPU of one host
share the bucket buffers themselves (rlhf.rollout.shared_buckets), and the broadcasts only signal.
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
    """How the driver pushes weights: rollout.weight_sync, its bucket size, the timeout, the backend
    (nccl only when the policy and the engines hold GPUs of their own) and whether one host's CPU
    members may share the buckets in memory."""
    mode: str
    bucket_mb: int
    timeout_s: float
    backend: str
    tensor_parallel_size: int
    shared_memory: bool = True

    @staticmethod
    def from_config(cfg) -> "SyncSettings":
        from rlhf.training.devices import process_group_backend

        # NCCL cannot span two processes on one GPU, which is what `ray.colocate` makes of policy rank 0
        # and engine 0: colocated pushes go through host memory (shared memory when on one host).
        both_on_gpus = cfg.ray.policy.num_gpus > 0 and cfg.ray.rollout.num_gpus > 0 and not cfg.ray.colocate
        return SyncSettings(cfg.rollout.weight_sync, cfg.rollout.weight_sync_bucket_mb, cfg.ray.collective_timeout_s,
                            process_group_backend(1 if both_on_gpus else 0), cfg.rollout.tensor_parallel_size,
                            cfg.rollout.weight_sync_shared_memory)


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


SIGNAL_BYTES = 16 << 20
"""Shared buckets: rank 0 signals once per this many bytes written (a signal per small tensor cost
more of rank 0's time than the copies, and a receiver still starts on the first group at once)."""


def signal_groups(specs: list[TensorSpec]) -> list[list[int]]:
    """The positions, within one bucket, that rank 0 writes before each signal."""
    return plan_buckets([aligned(s.nbytes) for s in specs], SIGNAL_BYTES)


def unpack(buffer: torch.Tensor, specs: list[TensorSpec]) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) views into `buffer`: each tensor at the next aligned offset, in order."""
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
    """One member of the weight-sync group: rank 0 sends, every other rank receives and loads.

    `shared_memory` (rank 0's choice; the others follow it): when every member is on the CPU of one
    host, buckets travel through shared-memory files (rlhf.rollout.shared_buckets) and the group
    carries one small signal per 16 MB written; otherwise, or when any member cannot map rank 0's files,
    each tensor is broadcast over the group itself."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float,
                 specs: list[TensorSpec], bucket_mb: int, device: torch.device | str,
                 shared_memory: bool = True) -> None:
        self.rank, self.world_size, self.backend, self.device = rank, world_size, backend, torch.device(device)
        self.group, self._store = open_group(host, port, rank, world_size, backend, timeout_s)
        self.specs = specs
        self.buckets = plan_spec_buckets(specs, bucket_mb)
        self.bucket_bytes = [sum(aligned(specs[i].nbytes) for i in index) for index in self.buckets]
        """Each bucket's size as laid out by `unpack`: its buffer, or its shared file."""
        self._one_buffer: torch.Tensor | None = None
        """A receiver's one buffer for every bucket, when its caller copies each tensor at once."""
        self._bucket_buffers: dict[int, torch.Tensor] = {}
        """A receiver's buffer per bucket position, kept between pushes on the CPU."""
        self.shared_buckets: list[torch.Tensor] | None = None
        """Every member's mapping of the same files, one per bucket, when the group agreed on them."""
        self._push_read = None
        """Shared buckets: the all-reduce that completes once every receiver is done with the last push
        (rank 0 waits for it before it writes over the buckets again)."""
        if self.device.type == "cpu":  # every member agrees, so every member asks (rank 0 answers)
            self.shared_buckets = self._agree_on_shared_buckets(shared_memory)

    @property
    def transport(self) -> str:
        return "shared_memory" if self.shared_buckets is not None else self.backend

    def _agree_on_shared_buckets(self, wanted: bool) -> list[torch.Tensor] | None:
        """Rank 0 creates the files and names them (when `wanted` there); each member maps them or says
        it cannot; all use them only if all can. Rank 0 then removes the names (the mappings stay)."""
        from rlhf.rollout import shared_buckets

        sizes = self.bucket_bytes
        if not sizes:
            return None
        token = torch.zeros(1, dtype=torch.int64)
        created = None
        if self.rank == 0 and wanted:
            token[0] = shared_buckets.new_token(sum(sizes))
            if token[0]:
                created = shared_buckets.create_buckets(int(token[0]), sizes)
        self._start_broadcast(token).wait()
        if not token[0]:
            return None
        mapped = created if self.rank == 0 else shared_buckets.open_buckets(int(token[0]), sizes)
        everyone = torch.tensor([1 if mapped is not None else 0], dtype=torch.int64)
        options = dist.AllreduceOptions()
        options.reduceOp = dist.ReduceOp.MIN
        self.group.allreduce([everyone], options).wait()
        if self.rank == 0:
            shared_buckets.remove_files(int(token[0]), len(sizes))
        return mapped if everyone[0] else None

    def _start_broadcast(self, tensor: torch.Tensor):
        options = dist.BroadcastOptions()
        options.rootRank = 0
        return self.group.broadcast([tensor], options)

    def send(self, buckets: Iterable[list[torch.Tensor]]) -> int:
        """Rank 0: broadcast each bucket's tensors (in plan order); returns the bytes sent. A bucket's
        broadcasts all run before its tensors are let go (ZeRO-3 releases them at the next bucket)."""
        sent = 0
        self._wait_until_last_push_read()
        for position, (index, tensors) in enumerate(zip(self.buckets, buckets, strict=True)):
            expected = [self.specs[i] for i in index]
            for spec, tensor in zip(expected, tensors, strict=True):
                if tuple(tensor.shape) != spec.shape:
                    raise ValueError(f"weight sync: {spec.name} has shape {tuple(tensor.shape)}, "
                                     f"the manifest says {spec.shape}")
            if self.shared_buckets is not None:
                on_the_wire = self._write_shared(self.shared_buckets[position], expected, tensors)
            else:
                # No copy when the tensor is already contiguous, of its manifest dtype and on this device.
                wires = [t.detach().to(device=self.device, dtype=spec.torch_dtype).contiguous()
                         for t, spec in zip(tensors, expected)]
                on_the_wire = [(wire, self._start_broadcast(wire)) for wire in wires]
            for _, work in on_the_wire:
                work.wait()
            sent += sum(spec.nbytes for spec in expected)
        self._start_push_read()
        return sent

    def _start_push_read(self) -> None:
        if self.shared_buckets is not None:
            self._push_read = self.group.allreduce([torch.zeros(1, dtype=torch.int64)])

    def _wait_until_last_push_read(self) -> None:
        if self._push_read is not None:
            self._push_read.wait()
            self._push_read = None

    def _write_shared(self, buffer: torch.Tensor, specs: list[TensorSpec], tensors: list[torch.Tensor]) -> list:
        """Copy the tensors into their places in the shared bucket, signalling each group once it is there."""
        places = unpack(buffer, specs)
        signals = []
        for group in signal_groups(specs):
            for i in group:
                places[i][1].copy_(tensors[i].detach())
            signal = torch.zeros(1, dtype=torch.int64)
            signals.append((signal, self._start_broadcast(signal)))
        return signals

    def receive(self, reuse_buffer: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """Other ranks: (name, tensor) of each tensor as it arrives (views into its bucket's buffer).
        The whole bucket is asked for at once, so the caller works on one tensor while the next arrive.

        `reuse_buffer`: the caller copies every tensor before asking for the next one, so one buffer
        serves every bucket; vLLM's loader may keep views until a layer is complete, so each bucket
        of a push gets a buffer of its own. Either way the next push writes into the same memory."""
        self._wait_until_last_push_read()
        for position, index in enumerate(self.buckets):
            specs = [self.specs[i] for i in index]
            if self.shared_buckets is not None:
                views = unpack(self.shared_buckets[position], specs)
                groups = signal_groups(specs)
                arriving = [self._start_broadcast(torch.zeros(1, dtype=torch.int64)) for _ in groups]
            else:
                buffer = self._bucket_buffer(position, self.bucket_bytes[position], reuse_buffer)
                views = unpack(buffer, specs)
                groups = [[i] for i in range(len(views))]
                arriving = [self._start_broadcast(tensor) for _, tensor in views]
            for group, work in zip(groups, arriving):
                work.wait()
                for i in group:
                    yield views[i]
        self._start_push_read()  # the caller has let go of every view: rank 0 may write the next push

    def _bucket_buffer(self, position: int, size: int, reuse_buffer: bool) -> torch.Tensor:
        """Where bucket `position` of a push lands. Host memory is kept from push to push, because fresh
        pages cost a fault each (a fifth of a vLLM push of the 50M model on CPU); the CUDA caching
        allocator recycles freed device memory by itself, so a GPU keeps at most the shared buffer."""
        if reuse_buffer:
            if self._one_buffer is None or self._one_buffer.numel() < size:
                self._one_buffer = torch.empty(size, dtype=torch.uint8, device=self.device)
            return self._one_buffer[:size]
        if self.device.type != "cpu":
            return torch.empty(size, dtype=torch.uint8, device=self.device)
        if position not in self._bucket_buffers:
            self._bucket_buffers[position] = torch.empty(size, dtype=torch.uint8, device=self.device)
        return self._bucket_buffers[position]

    def close(self) -> None:
        self.group = None
        self._store = None
        self._one_buffer = None
        self._bucket_buffers = {}
        self.shared_buckets = None
        self._push_read = None

