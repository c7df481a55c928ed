"""What the PPO step does with the policy-gradient menu's keys, as calls the driver makes.

- `algorithm.kl.placement: loss` takes the KL out of the reward (β = 0 there) and hands β and the
  reference log-probs to the loss through the Experience; the controller still reads the measured KL.
- `algorithm.overlong`: the soft penalty is added to the scores before the advantages; the filter
  masks truncated responses out of every loss (rlhf/losses/overlong.py).
"""
from __future__ import annotations

from typing import Optional

import torch

from rlhf.config import Config
from rlhf.losses import overlong_penalty, truncated_rows
from rlhf.records import RolloutBatch


def reward_kl_coef(cfg: Config, kl_coef: float) -> float:
    """β in the shaped reward: 0 when the KL is a loss term instead."""
    return 0.0 if cfg.algorithm.kl.placement == "loss" else kl_coef


def ended_rows(rollout: RolloutBatch, eos_token_id: Optional[int]) -> torch.Tensor:
    """[B] bool: the response ended on EOS (its last generated token) or before the length limit."""
    lengths = rollout.response_mask.sum(dim=1).long()
    last = (rollout.prompt_len + lengths - 1).clamp(min=0)
    last_token = rollout.sequences.gather(1, last.unsqueeze(1)).squeeze(1)
    on_eos = (last_token == eos_token_id) if eos_token_id is not None else torch.zeros_like(lengths, dtype=torch.bool)
    return (on_eos & (lengths > 0)) | (lengths < rollout.response_mask.shape[1])


def apply_overlong(cfg: Config, rollout: RolloutBatch, scores: torch.Tensor,
                   eos_token_id: Optional[int]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(scores with the soft penalty, [B] rows kept in the loss, {"response/truncated_frac": ...})."""
    over, limit = cfg.algorithm.overlong, cfg.rollout.max_new_tokens
    truncated = truncated_rows(rollout.response_mask, ended_rows(rollout, eos_token_id), limit)
    lengths = rollout.response_mask.sum(dim=1)
    shaped = scores + overlong_penalty(lengths, limit, over.buffer, over.penalty).to(scores.dtype)
    keep = ~truncated if over.filter else torch.ones_like(truncated)
    return shaped, keep, {"response/truncated_frac": float(truncated.float().mean()) if len(truncated) else 0.0}


def policy_gradient_fields(cfg: Config, rollout: RolloutBatch, ref_logprobs: torch.Tensor, kl_coef: float,
                           old_from_rollout: bool) -> dict:
    """The Experience fields beyond PPO's classic ones (rollout log-probs, loss-placed KL)."""
    in_loss = cfg.algorithm.kl.placement == "loss"
    return {"rollout_logprobs": rollout.rollout_logprobs * rollout.response_mask,
            "ref_logprobs": ref_logprobs if in_loss else None,
            "kl_coef": kl_coef if in_loss else 0.0,
            "old_from_rollout": old_from_rollout}


def micro_batches_per_step(cfg: Config) -> int:
    """Micro-batches over all policy replicas that make one optimizer step."""
    return cfg.trainer.mini_batch_size // cfg.trainer.micro_batch_size

