"""Actor groups and their placement groups.

Separate placement (the default) gives each group its own placement group with one bundle
per replica. `ray.colocate` packs every group into one placement group: replica j of any
group goes to bundle j mod N (N = the largest group), and each bundle holds the sum of
what its actors ask for, so Ray still accounts every CPU and GPU.
"""
from __future__ import annotations

import logging
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
        options = {
            "num_cpus": group.num_cpus,
            "num_gpus": group.num_gpus,
            "runtime_env": {"env_vars": {**worker_env(group.num_gpus), **self.env, **self.group_env.get(name, {})}},
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
