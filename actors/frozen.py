"""Frozen model roles: the reference model (log-probs) and the distillation teacher (full-vocabulary
log-probs, and generation). Forward only. The reward source's actor is actors/reward.py."""
from __future__ import annotations


import torch

from actors.common import actor, prepare_process, where_am_i
from actors.rollout import build_engine
from rlhf.config import Config
from rlhf.models.forward import over_micro_batches, policy_logprobs, response_vocab_logprobs
from rlhf.training.micro_batches import response_forward
from rlhf.models.loading import load_causal_lm, load_reference_model
from rlhf.rollout import Generation, SamplingSpec
from rlhf.training.devices import actor_device


@actor
class ReferenceActor:
    def __init__(self, cfg: Config, rank: int = 0) -> None:
        prepare_process(cfg.ray.reference.num_cpus, cfg.trainer.seed + rank)
        self.device = actor_device(cfg.ray.reference.num_gpus)
        self.model = load_reference_model(cfg.model, self.device)
        self.micro_batch_size = cfg.trainer.micro_batch_size

    def where(self) -> dict:
        return where_am_i(self.device)

    @torch.no_grad()
    def forward(self, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                trim: bool = True) -> torch.Tensor:
        return response_forward(lambda seq, attn, plen: policy_logprobs(self.model, seq, attn, plen)[0],
                                self.micro_batch_size, sequences.to(self.device), attention_mask.to(self.device),
                                prompt_len, trim)


@actor
class TeacherActor:
    """The frozen distillation teacher (`model.teacher_path`): its distribution at the student's sampled
    positions, and its own answers through a rollout engine of the student's engine kind, so the two
    generation speeds compare like for like. The builtin engine shares the one model copy."""

    def __init__(self, cfg: Config, rank: int = 0, engine_kind: str = "builtin") -> None:
        prepare_process(cfg.ray.teacher.num_cpus, cfg.trainer.seed + rank)
        self.device = actor_device(cfg.ray.teacher.num_gpus)
        path = cfg.model.teacher_path
        self.engine = build_engine(engine_kind, cfg, rank, False, model_path=path, device=self.device)
        self.model = (self.engine.model if engine_kind == "builtin"
                      else load_causal_lm(path, cfg.model.dtype, cfg.model.trust_remote_code).to(self.device).eval())
        self.micro_batch_size = cfg.trainer.micro_batch_size

    def where(self) -> dict:
        return where_am_i(self.device)

    @torch.no_grad()
    def forward_vocab(self, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
        """[B, R, V] log-probs over the vocabulary at every response position."""
        return over_micro_batches(lambda seq, attn: response_vocab_logprobs(self.model, seq, attn, prompt_len),
                                  self.micro_batch_size, sequences.to(self.device), attention_mask.to(self.device))

    def generate(self, prompt_token_ids: list[list[int]], sampling: SamplingSpec) -> list[Generation]:
        return self.engine.generate(prompt_token_ids, sampling)
