"""Every value an actor returns through Ray is on the CPU, and actors with no GPU see none."""
from __future__ import annotations

import importlib
import pkgutil

import torch

import actors
from actors.common import cpu_results, worker_env
from rlhf.records import Experience


def _actor_classes() -> list:
    """Every Ray actor class defined in the actors package (a new actor is covered by itself)."""
    found = []
    for info in pkgutil.iter_modules(actors.__path__):
        module = importlib.import_module(f"actors.{info.name}")
        for value in vars(module).values():
            if hasattr(value, "__ray_metadata__") and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_every_public_method_of_every_actor_returns_on_cpu():
    classes = _actor_classes()
    assert {"TrainingActor", "ReferenceActor", "RewardActor", "TeacherActor", "RolloutActor"} <= {
        c.__ray_metadata__.class_name for c in classes}
    for cls in classes:
        modified = cls.__ray_metadata__.modified_class
        for name in dir(modified):
            if name.startswith("_") or name.startswith("__ray"):
                continue
            method = getattr(modified, name)
            if callable(method) and not isinstance(method, type):
                assert getattr(method, "_returns_on_cpu", False), \
                    f"{cls.__ray_metadata__.class_name}.{name} is not wrapped by actors.common.cpu_results"


def test_cpu_results_moves_what_a_method_returns():
    @cpu_results
    class Holder:
        def __init__(self, tensor):
            self.tensor = tensor

        def get(self):
            return {"x": [self.tensor]}

    t = torch.zeros(2)
    assert Holder(t).get()["x"][0] is t  # CPU tensors pass through without a copy
    assert Holder.get._returns_on_cpu and Holder.get.__name__ == "get"


def test_record_round_trip_through_meta_and_back_keeps_shapes():
    exp = Experience(*(torch.ones(2, 3) for _ in range(7)), prompt_len=1)
    assert exp.to("meta").old_values.shape == (2, 3)


def test_actors_without_gpus_see_none():
    assert worker_env(0)["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in worker_env(1)


def test_actor_classes_are_constructible_as_plain_classes():
    from actors.common import plain_class
    from actors.rollout import RolloutActor

    cls = plain_class(RolloutActor)
    assert cls.__name__ == "RolloutActor" and not hasattr(cls, "remote") and cls.generate._returns_on_cpu
