"""Rollout engines as Ray actors: generate with log-probs, load pushed weights in place."""
from __future__ import annotations

import ray

from actors.common import prepare_process, where_am_i
from rlhf.config import Config
from rlhf.models.loading import load_causal_lm, load_tokenizer
from rlhf.rollout import Generation, SamplingSpec
from rlhf.rollout.builtin import BuiltinEngine


@ray.remote
class RolloutActor:
    def __init__(self, cfg: Config, rank: int = 0) -> None:
        prepare_process(cfg.ray.rollout.num_cpus, cfg.trainer.seed + rank)
        tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
        model = load_causal_lm(cfg.model.path, cfg.model.dtype, cfg.model.trust_remote_code)
        self.engine = BuiltinEngine(model, tokenizer)
        self.kind = "builtin"

    def where(self) -> dict:
        return where_am_i()

    def generate(self, prompt_token_ids: list[list[int]], sampling: SamplingSpec) -> list[Generation]:
        return self.engine.generate(prompt_token_ids, sampling)

    def load_weights(self, blob: bytes, version: int) -> int:
        self.engine.load_weights(blob, version)
        return version
