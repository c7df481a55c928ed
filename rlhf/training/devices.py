"""Which device an actor computes on, and moving values across the Ray boundary.

The device follows the configured resources, never "is CUDA importable" alone: Ray 2.60 no longer
hides the GPUs from an actor that asked for none, so an actor with `num_gpus: 0` on a GPU node would
otherwise land on `cuda:0` unaccounted (the placement gives it `CUDA_VISIBLE_DEVICES=""` as well).
Ray sets `CUDA_VISIBLE_DEVICES` to the GPUs it granted, so a GPU actor's own device is always index 0.
Whatever an actor returns through Ray is on the CPU: the driver and the other actors may hold no GPU.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch


def actor_device(num_gpus: float) -> torch.device:
    """`cuda:0` for an actor granted (a share of) a GPU on a machine with CUDA, else the CPU."""
    if num_gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def process_group_backend(num_gpus: float) -> str:
    """nccl for trainers that hold GPUs, gloo otherwise (CPU runs, and tests)."""
    return "nccl" if num_gpus > 0 else "gloo"


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`value` with `fn` applied to every tensor inside it: dataclass fields, lists, tuples, dict values."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changed = {f.name: map_tensors(getattr(value, f.name), fn) for f in dataclasses.fields(value)
                   if f.init}
        if all(new is getattr(value, name) for name, new in changed.items()):
            return value  # nothing inside moved (e.g. lists of Generation): no copy
        return dataclasses.replace(value, **changed)
    if isinstance(value, (list, tuple)):
        mapped = [map_tensors(v, fn) for v in value]
        return type(value)(*mapped) if hasattr(value, "_fields") else type(value)(mapped)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    return value


def to_device(value: Any, device: torch.device | str) -> Any:
    """Every tensor inside `value` on `device` (no copy for tensors already there)."""
    return map_tensors(value, lambda t: t.to(device))


def to_cpu(value: Any) -> Any:
    """What may cross the Ray boundary: every tensor on the CPU."""
    return map_tensors(value, lambda t: t if t.device.type == "cpu" else t.cpu())


def tensor_devices(value: Any) -> set[str]:
    """The device types of the tensors inside `value` (for tests and checks)."""
    found: set[str] = set()
    map_tensors(value, lambda t: found.add(t.device.type) or t)
    return found
