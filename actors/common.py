"""Small pieces every actor needs at start-up."""
from __future__ import annotations

import functools
import os
import random

import torch

try:
    import ray
except ImportError:  # the GPU check's image (bench/gpu_check.sh) has no Ray: actors run as plain classes
    ray = None

from rlhf.training.devices import to_cpu


# OpenMP's default wait policy spins idle threads for a while before sleeping. Our groups share
# cores (the experience phase runs policy, reference, critic and reward forwards at once; other
# jobs may run beside us), and a spinning thread holds a core its neighbour's parallel region is
# waiting for: on the 2-core machine a 2-thread generate fell from 296 to 10-24 tokens/s beside
# one other busy process, and recovered to 135-141 with PASSIVE (bench/README.md, "Speed work").
# libgomp reads this when it loads, so it must be in the worker's environment from the start.
THREAD_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}

# A thread team that works alone on its cores, through many short parallel regions, loses time when its
# passive threads sleep and wake for each one. A spin of about 0.2 ms (libgomp counts some 100,000 spins
# a millisecond; its own default is 3 ms) keeps them awake between regions and bounds what a neighbour
# can lose. vLLM's engine core in the actor's process (rollout.engine_core_in_process): 16 x 128 tokens of
# the 50M model in 1.24 s against 2.6 s passive; a 2-thread fp32 training step of that model 3.22 s
# against 3.45 s (bench/README.md).
SHORT_SPIN_THREAD_ENV = {"GOMP_SPINCOUNT": "20000"}
ENGINE_GROUPS = ("rollout", "teacher")
"""Groups whose actors host a rollout engine."""


def worker_env(num_gpus: float = 0.0) -> dict[str, str]:
    """Environment variables every actor process starts with; the driver's own settings win.

    An actor that holds no GPU gets `CUDA_VISIBLE_DEVICES=""`: Ray 2.60 no longer hides the node's
    GPUs from it, and torch (or NCCL, or vLLM) would otherwise use `cuda:0` beside its real owner.
    """
    env = {key: os.environ.get(key, default) for key, default in THREAD_ENV_DEFAULTS.items()}
    env["TOKENIZERS_PARALLELISM"] = "false"  # a fast tokenizer's threads would compete with torch's
    if not num_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def engine_group_env(engine_kind: str, engine_core_in_process: bool, num_cpus: float) -> dict[str, str]:
    """Extra environment of the groups that host rollout engines (rollout, a distillation's teacher): they
    generate with the other groups idle, so vLLM's engine core in their process, and a built-in engine with
    a team of threads, spin them briefly (vLLM's own worker processes preload their own OpenMP)."""
    if engine_kind == "vllm":
        return dict(SHORT_SPIN_THREAD_ENV) if engine_core_in_process else {}
    return _spin_if_a_team(num_cpus)


def trained_group_env(num_cpus: float) -> dict[str, str]:
    """Extra environment of a trained group (policy, critic): a replica with a team of threads spins them
    briefly. Its training phase runs with the other groups idle (policy and critic train side by side on
    cores of their own). Frozen groups stay passive: their forwards share the cores in the experience
    phase, where a spinning reference slowed PPO's (1.75 s to 1.94 s a step, bench/README.md)."""
    return _spin_if_a_team(num_cpus)


def _spin_if_a_team(num_cpus: float) -> dict[str, str]:
    """The short spin for an actor with two threads or more (one thread has no team to keep awake)."""
    return dict(SHORT_SPIN_THREAD_ENV) if int(num_cpus) >= 2 else {}


def cpu_results(cls):
    """Class decorator for actors: every public method's return value crosses Ray on the CPU.

    `actor` applies it under `@ray.remote`. Methods are marked (`_returns_on_cpu`) so a test can check every actor.
    """
    for name, method in list(vars(cls).items()):
        if name.startswith("_") or not callable(method):
            continue

        def wrapped(*args, __method=method, **kwargs):
            return to_cpu(__method(*args, **kwargs))

        wrapped = functools.wraps(method)(wrapped)
        wrapped._returns_on_cpu = True
        setattr(cls, name, wrapped)
    return cls


def prepare_process(num_cpus: float, seed: int) -> None:
    """Match torch's threads to the CPUs Ray granted, and seed this process."""
    threads = max(1, int(num_cpus))
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    random.seed(seed)
    torch.manual_seed(seed)


_PLAIN: dict[str, type] = {}
"""Actor class name -> the class itself, for driving it in one process (bench/gpu_check.py)."""


def actor(cls):
    """`@ray.remote` over `cpu_results`; without Ray the plain class (one process, bench/gpu_check.sh)."""
    cls = cpu_results(cls)
    _PLAIN[cls.__name__] = cls
    return ray.remote(cls) if ray is not None else cls


def plain_class(actor_cls) -> type:
    """The class behind an `@actor`, constructible and callable in this process (with or without Ray)."""
    return _PLAIN[actor_cls.__ray_metadata__.class_name] if hasattr(actor_cls, "__ray_metadata__") else actor_cls


def node_ip() -> str:
    return ray.util.get_node_ip_address() if ray is not None else "127.0.0.1"


def where_am_i(device: torch.device | str = "cpu") -> dict:
    """Node id, address, granted resources, thread environment, torch's thread count, device and visible GPUs,
    for the placement log."""
    in_ray = ray is not None and ray.is_initialized()
    ctx = ray.get_runtime_context() if in_ray else None
    return {
        "node_id": ctx.get_node_id() if ctx else "local",
        "node_ip": node_ip(),
        "pid": os.getpid(),
        "placement_group": ctx.get_placement_group_id() if ctx else None,
        "resources": {k: v for k, v in (ctx.get_assigned_resources() or {}).items()} if ctx else {},
        "thread_env": {key: os.environ.get(key) for key in (*THREAD_ENV_DEFAULTS, *SHORT_SPIN_THREAD_ENV)},
        # The variables this actor's own runtime_env set (the rest its worker inherited from a local Ray).
        "runtime_env_vars": sorted((ctx.runtime_env.get("env_vars") or {}) if ctx else {}),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
