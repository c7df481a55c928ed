"""Devices: records move whole, results come back whole, the backend follows the resources."""
from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest
import torch

import rlhf.records as records
from rlhf.rollout.sampling import Generation
from rlhf.training.devices import (actor_device, map_tensors, process_group_backend, tensor_devices, to_cpu,
                                   to_device)


def _record_classes() -> list[type]:
    """Every dataclass in rlhf.records with at least one tensor field (so a new record is covered)."""
    out = []
    for _, cls in inspect.getmembers(records, inspect.isclass):
        if dataclasses.is_dataclass(cls) and cls.__module__ == records.__name__:
            hints = typing.get_type_hints(cls)
            if any("Tensor" in str(hints[f.name]) for f in dataclasses.fields(cls)):
                out.append(cls)
    return out


def _example(cls):
    """An instance with a small tensor in every tensor field (optional ones included) and dummies elsewhere."""
    values = {}
    for f in dataclasses.fields(cls):
        hint = str(typing.get_type_hints(cls)[f.name])
        if "Tensor" in hint:
            values[f.name] = torch.ones(2, 3)
        elif "list" in hint:
            values[f.name] = ["a", "b"]
        else:
            values[f.name] = 1
    return cls(**values)


def test_every_record_type_is_covered():
    names = {cls.__name__ for cls in _record_classes()}
    assert {"RolloutBatch", "Experience", "SFTBatch", "PreferenceBatch", "DistillBatch"} <= names


@pytest.mark.parametrize("cls", _record_classes(), ids=lambda c: c.__name__)
def test_record_moves_every_tensor_field(cls):
    # meta is a real second device on any machine: a field .to() forgets stays on the CPU.
    moved = _example(cls).to("meta")
    assert type(moved) is cls
    for f in dataclasses.fields(cls):
        value = getattr(moved, f.name)
        if isinstance(value, torch.Tensor):
            assert value.device.type == "meta", f"{cls.__name__}.{f.name} left on {value.device}"


def test_map_tensors_reaches_nested_values():
    batch = _example(records.Experience)
    value = {"a": [batch, (torch.zeros(1), 3)], "b": Generation([1], [0.5], 0), "c": torch.zeros(2)}
    moved = to_device(value, "meta")
    assert tensor_devices(moved) == {"meta"}
    assert tensor_devices(value) == {"cpu"}  # the original is untouched
    assert moved["a"][1][1] == 3 and moved["b"].token_ids == [1]


def test_to_cpu_keeps_cpu_tensors_without_copying():
    t = torch.zeros(3)
    assert to_cpu({"x": [t]})["x"][0] is t
    assert map_tensors(5, lambda x: x) == 5


def test_device_and_backend_follow_configured_gpus():
    assert actor_device(0) == torch.device("cpu")
    assert process_group_backend(0) == "gloo"
    assert process_group_backend(1) == "nccl"
    assert process_group_backend(0.5) == "nccl"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert actor_device(1).type == expected
