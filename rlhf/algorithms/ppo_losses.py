"""One micro-batch of PPO: the policy loss and the critic loss, computed on a live model."""
from __future__ import annotations

import torch

from rlhf.losses import ppo_policy_loss, value_loss
from rlhf.masked import masked_mean
from rlhf.models.forward import policy_logprobs, response_values
from rlhf.records import Experience


def policy_micro_batch_loss(
    model: torch.nn.Module, batch: Experience, clip_eps: float, entropy_coef: float
) -> tuple[torch.Tensor, dict[str, float]]:
    logprobs, entropy = policy_logprobs(
        model, batch.sequences, batch.attention_mask, batch.prompt_len, with_entropy=True,
        entropy_grad=bool(entropy_coef),  # logged always, differentiated only when it is in the loss
    )
    loss, stats = ppo_policy_loss(logprobs, batch.old_logprobs, batch.advantages, batch.response_mask, clip_eps)
    mean_entropy = masked_mean(entropy, batch.response_mask)
    if entropy_coef:
        loss = loss - entropy_coef * mean_entropy
    metrics = {
        "policy/loss": float(loss.detach()),
        "policy/clipfrac": float(stats.clipfrac),
        "policy/approx_kl": float(stats.approx_kl),
        "policy/entropy": float(mean_entropy.detach()),
    }
    return loss, metrics


def critic_micro_batch_loss(
    model: torch.nn.Module, batch: Experience, value_clip_eps: float | None
) -> tuple[torch.Tensor, dict[str, float]]:
    values = response_values(model, batch.sequences, batch.attention_mask, batch.prompt_len)
    loss, stats = value_loss(values, batch.old_values, batch.returns, batch.response_mask, value_clip_eps)
    return loss, {"critic/loss": float(loss.detach()), "critic/clipfrac": float(stats.clipfrac)}
