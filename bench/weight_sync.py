"""Weight-push throughput: object store (safetensors bytes through Ray) vs the collective group.

    python -m bench.weight_sync [--size small] [--engines builtin vllm] [--repeats 3]

Builds `.assets/<size>` when missing. Starts a local Ray, one policy replica (DeepSpeed ZeRO-2) and
one rollout engine of each kind in turn, then pushes the policy's full weights `--repeats` times
per path, as PPO does after each update (the collective group is joined once, before timing).
Prints one line per path and engine: megabytes per push, median seconds, MB/s; the collective path
twice, over shared memory (what a one-host CPU run uses) and over the group's gloo sockets (what
members on different hosts use).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import ray

from bench.rollout import ensure_assets
from rlhf.config import load
from rlhf.rollout.weight_sync import SyncSettings, WeightSync

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "ppo_tiny.yaml")


def measure(policy_path: str, engine: str, repeats: int) -> list[str]:
    from actors.common import engine_group_env
    from actors.groups import Placement
    from actors.rollout import RolloutActor
    from rlhf.modes.runtime import setup_trainers, spawn_group, spawn_trainers

    cfg = load(CONFIG, [f"model.path={policy_path}", f"rollout.engine={engine}", "rollout.kv_cache_memory_mb=256",
                        "ray.policy.replicas=1", "ray.rollout.replicas=1", "logging.progress=false"])
    # The engine's group starts as a run's does (vLLM's engine core in process spins its threads briefly).
    placement = Placement(cfg.ray, ["policy", "rollout"],
                          group_env={"rollout": engine_group_env(engine, bool(cfg.rollout.engine_core_in_process),
                                                                 cfg.ray.rollout.num_cpus)})
    policy = spawn_trainers(cfg, placement, "policy")
    engines = spawn_group(cfg, placement, "rollout", RolloutActor, engine)
    setup_trainers([policy])
    lines = []
    try:
        for path, shared_memory in (("object_store", False), ("collective", True), ("collective", False)):
            sync = WeightSync(SyncSettings(path, cfg.rollout.weight_sync_bucket_mb, 120.0, "gloo", 1, shared_memory))
            sync.push(policy, engines, version=1)  # warm-up (and the collective group's join)
            if sync.last_push["path"] != path:
                raise RuntimeError(f"{path} push fell back to {sync.last_push['path']}")
            seconds = []
            for version in range(2, repeats + 2):
                started = time.perf_counter()
                sent = sync.push(policy, engines, version=version)
                seconds.append(time.perf_counter() - started)
            median = statistics.median(seconds)
            lines.append(f"engine={engine:8s} path={path:13s} MB={sent / 2**20:8.1f} s={median:7.3f} "
                         f"MB/s={sent / 2**20 / median:9.1f}" + (f" over={sync.transport}" if sync.transport else ""))
            print(lines[-1], flush=True)
    finally:
        for handle in (*engines.handles, *policy.handles):
            ray.kill(handle, no_restart=True)
        placement.remove()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small"])
    parser.add_argument("--engines", nargs="+", default=["builtin", "vllm"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # Only the policy is pushed: an already built policy folder is enough (the rest of the assets is slow).
    built = os.path.join(".assets", args.size, "policy", "model.safetensors")
    policy_path = os.path.abspath(os.path.dirname(built) if os.path.exists(built) else ensure_assets(args.size))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        for engine in args.engines:
            measure(policy_path, engine, args.repeats)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
