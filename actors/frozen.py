"""Frozen roles: the reference model (log-probs) and the reward source (scores). Forward only."""
from __future__ import annotations

import ray
import torch

from actors.common import prepare_process, where_am_i
from rlhf.config import Config
from rlhf.models.forward import over_micro_batches, policy_logprobs
from rlhf.models.loading import load_causal_lm
from rlhf.rewards import build_reward_source


@ray.remote
class ReferenceActor:
    def __init__(self, cfg: Config, rank: int = 0) -> None:
        prepare_process(cfg.ray.reference.num_cpus, cfg.trainer.seed + rank)
        path = cfg.model.reference_path or cfg.model.path
        self.model = load_causal_lm(path, cfg.model.dtype, cfg.model.trust_remote_code).eval()
        self.micro_batch_size = cfg.trainer.micro_batch_size

    def where(self) -> dict:
        return where_am_i()

    @torch.no_grad()
    def forward(self, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
        return over_micro_batches(lambda seq, attn: policy_logprobs(self.model, seq, attn, prompt_len)[0],
                                  self.micro_batch_size, sequences, attention_mask)


@ray.remote
class RewardActor:
    """Hosts whichever reward source the config names; the driver only sees `score`."""

    def __init__(self, cfg: Config, rank: int = 0) -> None:
        prepare_process(cfg.ray.reward.num_cpus, cfg.trainer.seed + rank)
        self.source = build_reward_source(cfg)

    def where(self) -> dict:
        return where_am_i()

    def score(self, prompts: list[str], responses: list[str], sequences: torch.Tensor,
              attention_mask: torch.Tensor) -> torch.Tensor:
        return self.source.score(prompts, responses, sequences, attention_mask)
