"""Driver side of the weight push: policy rank 0 to every rollout engine, after each update.

`collective` (the default): one process group per run spans policy rank 0 and every engine worker
(rank 0 = policy, then engine i's tensor-parallel workers at 1 + i * tp ...), built through its own
TCPStore and port; when all of them run on the CPU of one host, the buckets themselves sit in shared
memory and the group only signals. Each push fires the trainers' `broadcast_weights` (every replica:
ZeRO-3 gathers one bucket at a time) and the engines' `receive_weights` together, so neither side
waits on the other to be asked. Every wait has a timeout; a failed or timed-out push logs a warning, drops the group
(the next push rebuilds it, as after an engine restart) and sends this push through the object store.

`object_store`: rank 0's full state dict as one safetensors byte string through Ray (msgspec refuses
4 GiB and more, so this is for models under about 2B parameters in bf16).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import ray

from rlhf.rollout.sync_group import SyncSettings

logger = logging.getLogger(__name__)

JOIN_SLACK_S = 30.0
"""Added to the collective timeout for the driver's own waits (actor calls queue behind each other)."""


def wait_all(refs: list, timeout_s: float, fetch: Callable[[list], list]) -> list:
    """`fetch(refs)` once all are done, or TimeoutError after `timeout_s` (a push never hangs)."""
    _, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    if pending:
        raise TimeoutError(f"{len(pending)} of {len(refs)} weight-sync calls still running after {timeout_s:g}s")
    return fetch(refs)


def push_object_store(policy, engines, version: int, fetch: Callable[[list], list] = ray.get) -> int:
    blobs = fetch(policy.call("weights_blob"))
    blob_ref = ray.put(blobs[0])
    fetch(engines.call("load_weights", blob_ref, version))
    return len(blobs[0])


class WeightSync:
    """The push of one run's policy group into its engine group; kept on the engine group object."""

    def __init__(self, settings: SyncSettings) -> None:
        self.settings = settings
        self.joined = False
        self.transport = ""
        """What the collective group agreed on at its latest join: shared_memory, gloo or nccl."""
        self.last_push: dict = {}
        """{"path", "bytes", "seconds"} of the latest push (benchmarks and logs)."""

    def invalidate(self) -> None:
        """An engine restarted (or a push failed): the next push rebuilds the group."""
        self.joined = False

    def push(self, policy, engines, version: int, fetch: Callable[[list], list] = ray.get) -> int:
        started = time.perf_counter()
        path = self.settings.mode
        sent: Optional[int] = None
        if path == "collective":
            try:
                if not self.joined:
                    self._join(policy, engines, fetch)
                sent = self._broadcast(policy, engines, version, fetch)
            except (TimeoutError, ray.exceptions.RayTaskError) as err:
                self.joined = False
                logger.warning("collective weight push of version %d failed (%s); sending it through the object "
                               "store instead, the group is rebuilt on the next push", version, err)
                path = "object_store"
            except BaseException:
                self.joined = False  # a dead actor: the supervisor restarts it and pushes again
                raise
        if sent is None:
            sent = push_object_store(policy, engines, version, fetch)
        self.last_push = {"path": path, "bytes": sent, "seconds": time.perf_counter() - started}
        return sent

    def _join(self, policy, engines, fetch) -> None:
        s = self.settings
        rank0 = policy.handles[0]
        host, port = fetch([rank0.master_address.remote()])[0]
        manifest = fetch([rank0.weight_manifest.remote()])[0]
        world = 1 + len(engines) * s.tensor_parallel_size
        refs = [rank0.join_weight_sync.remote(host, port, world, s.backend, s.timeout_s, s.shared_memory)]
        refs += [h.join_weight_sync.remote(host, port, world, 1 + i * s.tensor_parallel_size, manifest, s.bucket_mb,
                                           s.timeout_s, s.backend) for i, h in enumerate(engines.handles)]
        self.transport = wait_all(refs, s.timeout_s + JOIN_SLACK_S, fetch)[0]
        self.joined = True
        logger.info("weight-sync group: policy rank 0 + %d engine worker(s) over %s (%s at %s:%d), buckets of %d MB",
                    world - 1, self.transport, s.backend, host, port, s.bucket_mb)

    def _broadcast(self, policy, engines, version: int, fetch) -> int:
        s = self.settings
        senders = policy.call("broadcast_weights")
        receivers = engines.call("receive_weights", version)
        results = wait_all(senders + receivers, s.timeout_s + JOIN_SLACK_S, fetch)
        return int(results[0])


def weight_sync_of(policy, engines, fetch: Callable[[list], list] = ray.get) -> WeightSync:
    """The WeightSync of this engine group, made on first use from the policy's own config."""
    sync = getattr(engines, "weight_sync", None)
    if sync is None:
        settings = fetch([policy.handles[0].weight_sync_settings.remote()])[0]
        sync = engines.weight_sync = WeightSync(settings)
    return sync


def engines_restarted(engines) -> None:
    """The restart hook: a restarted engine left the group, so the next push rebuilds it."""
    sync = getattr(engines, "weight_sync", None)
    if sync is not None:
        sync.invalidate()
