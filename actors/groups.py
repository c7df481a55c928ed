"""Actor groups and their placement groups.

Separate placement (the default) gives each group its own placement group with one bundle
per replica. `ray.colocate` packs every group into one placement group: replica j of any
group goes to bundle j mod N (N = the largest group), and each bundle holds the sum of
what its actors ask for, so Ray still accounts every CPU and GPU.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.common import worker_env
from rlhf.config import GroupConfig, RayConfig

logger = logging.getLogger(__name__)

# The share of a custom node resource each actor takes: enough to pin, small enough to share.
NODE_RESOURCE_SHARE = 0.001

_inherited: dict[str, Any] = {"node_id": None, "env": {}}
"""What every worker of the local Ray this process started inherits: that Ray's node and the variables."""


def init_local_ray(inherited_env: dict[str, str], **init_args: Any) -> None:
    """`ray.init(**init_args)` for a local Ray whose processes, and so every worker, start with `inherited_env`.

    An actor whose environment these variables already cover starts with no runtime_env of its own. Ray
    launches a worker that has one through a Python set-up process that then execs the worker: 0.25 s
    more CPU and 0.2-0.45 s more before each actor is up (bench/README.md, "Start-up"). The driver's own
    environment is restored once Ray's processes are running.
    """
    saved = {key: os.environ.get(key) for key in inherited_env}
    os.environ.update(inherited_env)
    try:
        ray.init(**init_args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _inherited.update(node_id=ray.get_runtime_context().get_node_id(), env=dict(inherited_env))


def inherited_env() -> dict[str, str]:
    """The variables the current Ray's workers inherit: `init_local_ray`'s, if it started this Ray, else none."""
    if ray.is_initialized() and _inherited["node_id"] == ray.get_runtime_context().get_node_id():
        return _inherited["env"]
    return {}


def runtime_env_vars(wanted: dict[str, str], inherited: dict[str, str]) -> dict[str, str]:
    """The variables an actor's runtime_env must set so that it runs with `wanted`, given what its worker
    inherits; an inherited variable it does not want is set empty (ours read empty as unset)."""
    extra = {key: value for key, value in wanted.items() if inherited.get(key) != value}
    extra.update({key: "" for key in inherited if key not in wanted and inherited[key] != ""})
    return extra


def _actor_resources(group: GroupConfig) -> dict[str, float]:
    resources = {"CPU": group.num_cpus}
    if group.num_gpus:
        resources["GPU"] = group.num_gpus
    if group.node_resource:
        resources[group.node_resource] = NODE_RESOURCE_SHARE
    return resources


@dataclass
class Slot:
    pg: PlacementGroup
    bundle_index: int


class Placement:
    """Creates the placement groups for the groups in use and hands out a slot per replica."""

    def __init__(self, ray_cfg: RayConfig, groups: list[str], env: Optional[dict[str, str]] = None,
                 group_env: Optional[dict[str, dict[str, str]]] = None) -> None:
        """`env`: environment variables every actor starts with, besides `worker_env()`; `group_env`: more
        for the actors of one group (group name -> variables)."""
        self.ray_cfg = ray_cfg
        self.groups = groups
        self.env = env or {}
        self.group_env = group_env or {}
        self.pgs: list[PlacementGroup] = []
        self.slots: dict[str, list[Slot]] = {}
        if ray_cfg.colocate:
            self._colocated()
        else:
            for name in groups:
                group = getattr(ray_cfg, name)
                pg = placement_group([_actor_resources(group)] * group.replicas, strategy=group.strategy,
                                     name=f"rlhf-{name}")
                self._wait(pg, name)
                self.slots[name] = [Slot(pg, i) for i in range(group.replicas)]

    def _colocated(self) -> None:
        size = max(getattr(self.ray_cfg, name).replicas for name in self.groups)
        bundles: list[dict[str, float]] = [{} for _ in range(size)]
        for name in self.groups:
            group = getattr(self.ray_cfg, name)
            for j in range(group.replicas):
                for key, value in _actor_resources(group).items():
                    bundles[j % size][key] = bundles[j % size].get(key, 0.0) + value
        pg = placement_group(bundles, strategy=self.ray_cfg.policy.strategy, name="rlhf-colocated")
        self._wait(pg, "colocated (all groups)")
        for name in self.groups:
            self.slots[name] = [Slot(pg, j % size) for j in range(getattr(self.ray_cfg, name).replicas)]

    def _wait(self, pg: PlacementGroup, name: str) -> None:
        self.pgs.append(pg)
        try:
            ray.get(pg.ready(), timeout=self.ray_cfg.placement_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                f"placement group of {name} could not be placed within ray.placement_timeout_s="
                f"{self.ray_cfg.placement_timeout_s:g}s: the cluster lacks {pg.bundle_specs}"
            ) from None

    def options(self, name: str, rank: int) -> dict:
        group = getattr(self.ray_cfg, name)
        slot = self.slots[name][rank]
        wanted = {**worker_env(group.num_gpus), **self.env, **self.group_env.get(name, {})}
        env_vars = runtime_env_vars(wanted, inherited_env())
        options = {
            "num_cpus": group.num_cpus,
            "num_gpus": group.num_gpus,
            "runtime_env": {"env_vars": env_vars} if env_vars else None,
            "resources": {group.node_resource: NODE_RESOURCE_SHARE} if group.node_resource else None,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=slot.pg, placement_group_bundle_index=slot.bundle_index
            ),
        }
        return {k: v for k, v in options.items() if v is not None}

    def remove(self) -> None:
        for pg in self.pgs:
            try:
                remove_placement_group(pg)
            except Exception:  # already gone with the cluster
                pass


class ActorGroup:
    """The replicas of one role, with calls fanned out to all of them."""

    def __init__(self, name: str, handles: list) -> None:
        self.name = name
        self.handles = handles

    def __len__(self) -> int:
        return len(self.handles)

    def call(self, method: str, *args: Any, **kwargs: Any) -> list:
        """The same call on every replica; returns object refs."""
        return [getattr(h, method).remote(*args, **kwargs) for h in self.handles]

    def call_each(self, method: str, per_replica_args: list[tuple]) -> list:
        """Replica i gets per_replica_args[i]."""
        return [getattr(h, method).remote(*args) for h, args in zip(self.handles, per_replica_args)]

    def where(self) -> list[dict]:
        return ray.get(self.call("where"))
