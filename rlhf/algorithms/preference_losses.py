"""One micro-batch of DPO (policy) or Bradley-Terry (reward model), computed on a live model.

Chosen and rejected rows go through the model in one forward (2B rows), the usual way to
halve the number of passes. Padding pairs (weight 0) go through the forward but not into the loss.
"""
from __future__ import annotations

import torch

from rlhf.losses import bradley_terry_loss, dpo_loss
from rlhf.masked import masked_sum
from rlhf.models.forward import policy_logprobs, sequence_scores
from rlhf.records import PreferenceBatch


def _both(batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.cat([batch.chosen, batch.rejected]),
            torch.cat([batch.chosen_attention_mask, batch.rejected_attention_mask]),
            torch.cat([batch.chosen_response_mask, batch.rejected_response_mask]))


def summed_response_logprobs(model: torch.nn.Module, sequences: torch.Tensor, attention_mask: torch.Tensor,
                             response_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """log π(response | prompt) per row [B]: token log-probs summed over the response mask."""
    logprobs, _ = policy_logprobs(model, sequences, attention_mask, prompt_len)
    return masked_sum(logprobs, response_mask, dim=-1)


def dpo_micro_batch_loss(model: torch.nn.Module, batch: PreferenceBatch, beta: float, loss_type: str,
                         label_smoothing: float, simpo_gamma: float) -> tuple[torch.Tensor, dict[str, float]]:
    # Every row goes through the model, padding too: under ZeRO-3 each forward is a collective
    # that all replicas must join, so no replica may skip one.
    sequences, attention_mask, response_mask = _both(batch)
    logps = summed_response_logprobs(model, sequences, attention_mask, response_mask, batch.prompt_len)
    real = batch.pair_weight > 0
    if not bool(real.any()):
        return logps.sum() * 0.0, {}
    chosen_logps, rejected_logps = logps[:len(batch)][real], logps[len(batch):][real]
    lengths = response_mask.sum(dim=-1)
    ref_chosen = batch.ref_chosen_logps[real] if batch.ref_chosen_logps is not None else None
    ref_rejected = batch.ref_rejected_logps[real] if batch.ref_rejected_logps is not None else None
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        chosen_logps, rejected_logps, ref_chosen, ref_rejected, beta, loss_type, label_smoothing,
        chosen_lengths=lengths[:len(batch)][real], rejected_lengths=lengths[len(batch):][real],
        simpo_gamma=simpo_gamma,
    )
    loss = losses.mean()
    margin = chosen_rewards - rejected_rewards
    return loss, {
        "dpo/loss": float(loss.detach()),
        "rewards/chosen": float(chosen_rewards.mean()),
        "rewards/rejected": float(rejected_rewards.mean()),
        "rewards/accuracy": float((margin > 0).float().mean()),
        "rewards/margin": float(margin.mean()),
        "logps/chosen": float(chosen_logps.detach().mean()),
        "logps/rejected": float(rejected_logps.detach().mean()),
    }


def reward_model_micro_batch_loss(model: torch.nn.Module,
                                  batch: PreferenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
    sequences, attention_mask, _ = _both(batch)
    scores = sequence_scores(model, sequences, attention_mask)
    real = batch.pair_weight > 0
    if not bool(real.any()):
        return scores.sum() * 0.0, {}
    chosen_scores, rejected_scores = scores[:len(batch)][real], scores[len(batch):][real]
    loss, accuracy = bradley_terry_loss(chosen_scores, rejected_scores)
    return loss, {
        "rm/loss": float(loss.detach()),
        "rm/accuracy": float(accuracy),
        "rm/margin": float((chosen_scores - rejected_scores).detach().mean()),
    }
