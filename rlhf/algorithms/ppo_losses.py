"""One micro-batch of PPO: the policy loss and the critic loss, computed on a live model.

The policy loss composes the math of rlhf.losses: the clipped surrogate (token or GSPO sequence
ratios, DAPO's clip-higher), the importance correction of the rollout/trainer mismatch, the
entropy bonus and, with `algorithm.kl.placement: loss`, the KL to the reference, all aggregated by
`algorithm.loss_agg`.

Which log-probs the importance correction compares: the engine's (`rollout_logprobs`) with the
trainer's old ones. With `old_logprobs: recompute` those come from the policy forward before the
step; with `old_logprobs: rollout` there is no such forward, so the trainer's current log-probs
(detached) stand in for them: on the step's first update they are exactly the trainer's old ones.
The PPO ratio is then taken against those same current log-probs (decoupled PPO with the proximal
policy = the current one), so the trust region comes from `is_cap` rather than the ratio clip.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

from rlhf.losses import (aggregate, aggregate_with_denominator, importance_weights, kl_loss_matrix,
                         loss_denominator, mismatch_stats, ppo_policy_loss, value_loss)
from rlhf.masked import masked_mean
from rlhf.models.forward import policy_logprobs, response_values
from rlhf.records import Experience


def with_loss_denominator(mini_batch: Experience, loss_agg: str, norm_len: Optional[int], parts: int) -> Experience:
    """The mini-batch with its own aggregation denominator attached, so that each micro-batch on each
    replica divides by it; `parts` undoes DeepSpeed's mean over the micro-batches of all replicas.
    Every mode, `token_mean` included, then gives the unsplit mini-batch's gradient for any split."""
    return replace(mini_batch, loss_denominator=loss_denominator(mini_batch.response_mask, loss_agg, norm_len),
                   loss_parts=parts)


def _aggregate(mat: torch.Tensor, batch: Experience, loss_agg: str, norm_len: Optional[int]) -> torch.Tensor:
    if batch.loss_denominator is not None:
        return aggregate_with_denominator(mat, batch.response_mask, loss_agg, batch.loss_denominator)
    if loss_agg == "token_mean":
        return masked_mean(mat, batch.response_mask)
    return aggregate(mat, batch.response_mask, loss_agg, norm_len)


def policy_micro_batch_loss(
    model: torch.nn.Module, batch: Experience, clip_eps: float, entropy_coef: float, *,
    clip_eps_high: Optional[float] = None, loss_agg: str = "token_mean", ratio_level: str = "token",
    is_correction: str = "none", is_cap: float = 2.0, norm_len: Optional[int] = None,
    kl_in_loss: bool = False, kl_estimator: str = "k3",
) -> tuple[torch.Tensor, dict[str, float]]:
    logprobs, entropy = policy_logprobs(
        model, batch.sequences, batch.attention_mask, batch.prompt_len, with_entropy=True,
        entropy_grad=bool(entropy_coef),  # logged always, differentiated only when it is in the loss
    )
    mask = batch.response_mask
    old = logprobs.detach() if batch.old_from_rollout and is_correction != "none" else batch.old_logprobs
    weights = (importance_weights(old, batch.rollout_logprobs, mask, is_correction, is_cap)
               if is_correction != "none" else None)
    loss, stats = ppo_policy_loss(logprobs, old, batch.advantages, mask, clip_eps, clip_eps_high, loss_agg, weights,
                                  ratio_level=ratio_level, norm_len=norm_len, denominator=batch.loss_denominator)
    mean_entropy = masked_mean(entropy, mask)
    if entropy_coef:
        loss = loss - entropy_coef * _aggregate(entropy, batch, loss_agg, norm_len)
    metrics = {}
    if kl_in_loss:
        kl_term = _aggregate(kl_loss_matrix(logprobs, batch.ref_logprobs, mask, batch.kl_coef, kl_estimator),
                             batch, loss_agg, norm_len)
        loss = loss + kl_term
        metrics["policy/kl_loss"] = float(kl_term.detach()) * batch.loss_parts
    if batch.loss_denominator is not None:
        loss = loss * batch.loss_parts  # DeepSpeed divides by the micro-batches of all replicas again
    metrics.update({
        "policy/loss": float(loss.detach()),
        "policy/clipfrac": float(stats.clipfrac),
        "policy/approx_kl": float(stats.approx_kl),
        "policy/entropy": float(mean_entropy.detach()),
    })
    if batch.rollout_logprobs is not None and is_correction != "none":
        trainer = logprobs.detach() if batch.old_from_rollout else batch.old_logprobs
        gap = mismatch_stats(trainer, batch.rollout_logprobs, mask, is_correction, is_cap)
        metrics.update({"rollout/mismatch_kl": float(gap.mismatch_kl), "rollout/is_weight_mean": float(gap.is_weight_mean),
                        "rollout/is_clipped_frac": float(gap.is_clipped_frac)})
    return loss, metrics


def critic_micro_batch_loss(
    model: torch.nn.Module, batch: Experience, value_clip_eps: float | None
) -> tuple[torch.Tensor, dict[str, float]]:
    values = response_values(model, batch.sequences, batch.attention_mask, batch.prompt_len)
    loss, stats = value_loss(values, batch.old_values, batch.returns, batch.response_mask, value_clip_eps)
    return loss, {"critic/loss": float(loss.detach()), "critic/clipfrac": float(stats.clipfrac)}
