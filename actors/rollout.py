"""Rollout engines as Ray actors: generate with log-probs, load pushed weights in place."""
from __future__ import annotations

from typing import Optional


import torch

from actors.common import actor, node_ip, prepare_process, where_am_i
from rlhf.config import Config
from rlhf.rollout import Generation, SamplingSpec
from rlhf.training.devices import actor_device


def build_engine(kind: str, cfg: Config, rank: int, sleep_between_steps: bool, model_path: Optional[str] = None,
                 device: torch.device | str = "cpu"):
    """A `kind` engine over `model_path` (default: the policy, `model.path`; distillation's teacher passes its own).

    The built-in engine's model loads onto `device`; vLLM places its workers itself."""
    path = model_path or cfg.model.path
    if kind == "vllm":
        from rlhf.rollout.vllm_engine import VLLMEngine, VLLMSettings

        r = cfg.rollout
        settings = VLLMSettings(
            dtype=cfg.rollout_dtype, seed=cfg.trainer.seed + rank, max_model_len=r.max_model_len,
            gpu_memory_utilization=r.gpu_memory_utilization, kv_cache_memory_mb=r.kv_cache_memory_mb,
            tensor_parallel_size=r.tensor_parallel_size, enable_sleep_mode=sleep_between_steps,
            enforce_eager=r.enforce_eager, engine_core_in_process=r.engine_core_in_process,
            trust_remote_code=cfg.model.trust_remote_code,
        )
        return VLLMEngine(path, settings)
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rollout.builtin import BuiltinEngine

    tokenizer = load_tokenizer(path, cfg.model.trust_remote_code)
    model = load_causal_lm(path, cfg.rollout_dtype, cfg.model.trust_remote_code).to(device)
    return BuiltinEngine(model, tokenizer)


@actor
class RolloutActor:
    def __init__(self, cfg: Config, rank: int = 0, kind: str = "builtin", sleep_between_steps: bool = False) -> None:
        prepare_process(cfg.ray.rollout.num_cpus, cfg.trainer.seed + rank)
        self.kind = kind
        self.device = actor_device(cfg.ray.rollout.num_gpus)
        self.engine = build_engine(kind, cfg, rank, sleep_between_steps, device=self.device)
        self.sleep_between_steps = sleep_between_steps

    def where(self) -> dict:
        return {**where_am_i(self.device), "engine": self.kind}

    def generate(self, prompt_token_ids: list[list[int]], sampling: SamplingSpec) -> list[Generation]:
        if self.sleep_between_steps:  # a step that skipped its update pushed no weights to wake it
            self.engine.wake_up()
        return self.engine.generate(prompt_token_ids, sampling)

    def load_weights(self, blob: bytes, version: int) -> int:
        if self.sleep_between_steps:
            self.engine.wake_up()
        self.engine.load_weights(blob, version)
        return version

    def join_weight_sync(self, host: str, port: int, world_size: int, first_rank: int, manifest: list,
                         bucket_mb: int, timeout_s: float, backend: str) -> None:
        if self.sleep_between_steps:
            self.engine.wake_up()
        self.engine.join_weight_sync(host, port, world_size, first_rank, manifest, bucket_mb, timeout_s, backend)

    def receive_weights(self, version: int) -> int:
        if self.sleep_between_steps:
            self.engine.wake_up()
        self.engine.receive_weights(version)
        return version

    def sleep(self) -> None:
        """Free accelerator memory for the colocated trainers until the next weight push."""
        if self.sleep_between_steps:
            self.engine.sleep()
