"""From scores and log-probs to PPO's training targets, for every advantage estimator.

Departures from the papers, on purpose:
- GRPO and RLOO fold the KL penalty into the sequence reward (score − β·Σ_t KL_t) before
  the group baseline, instead of adding a KL term to the loss as DeepSeekMath does, so one
  adaptive controller steers the KL the same way for every estimator.
- Samples whose score is NaN or inf get zero advantage and are left out of group
  baselines and batch statistics; they are counted, never trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from rlhf.advantages import broadcast_to_tokens, gae, grpo_advantages, reinforce_pp_advantages, rloo_advantages
from rlhf.losses import kl_penalized_rewards
from rlhf.masked import masked_mean, masked_whiten


@dataclass
class Targets:
    advantages: torch.Tensor
    """[B, R]"""
    returns: torch.Tensor
    """[B, R] value targets (zeros for critic-free estimators)."""
    token_rewards: torch.Tensor
    """[B, R] KL-shaped rewards (score on the last token)."""
    kl: torch.Tensor
    """[B, R] per-token KL estimate."""
    valid: torch.Tensor
    """[B] bool: the sample's score was finite."""


def _group_baseline(
    advantage: str, rewards: torch.Tensor, valid: torch.Tensor, group_size: int, scale_by_std: bool = True
) -> torch.Tensor:
    """GRPO/RLOO over groups, treating invalid samples as absent (their advantage is 0)."""
    out = torch.zeros_like(rewards)
    for start in range(0, len(rewards), group_size):
        group = slice(start, start + group_size)
        keep = valid[group]
        if keep.sum() < 2:
            continue  # a lone valid sample has no baseline to compare with: no signal
        if advantage == "grpo":
            out[group][keep] = grpo_advantages(rewards[group][keep], int(keep.sum()), scale_by_std=scale_by_std)
        else:
            out[group][keep] = rloo_advantages(rewards[group][keep], int(keep.sum()))
    return out


def compute_targets(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    values: Optional[torch.Tensor],
    *,
    advantage: str,
    kl_coef: float,
    kl_estimator: str,
    gamma: float,
    gae_lambda: float,
    group_size: int,
    whiten_advantages: bool,
    scale_by_std: bool = True,
) -> Targets:
    """Shapes: scores [B]; logprobs, ref_logprobs, mask, values [B, R]. `scale_by_std`: GRPO divides by
    the group std (False: Dr. GRPO's mean-centred advantage)."""
    valid = torch.isfinite(scores)
    mask = mask * valid.unsqueeze(1).to(mask.dtype)  # a bad sample contributes nothing anywhere
    safe_scores = torch.where(valid, scores, torch.zeros_like(scores))
    token_rewards, kl = kl_penalized_rewards(safe_scores, logprobs, ref_logprobs, mask, kl_coef, kl_estimator)
    if advantage == "gae":
        if values is None:
            raise ValueError("gae needs critic values")
        advantages, returns = gae(token_rewards, values * mask, mask, gamma, gae_lambda)
        if whiten_advantages:
            advantages = masked_whiten(advantages, mask)
    elif advantage in ("grpo", "rloo"):
        sequence_rewards = token_rewards.sum(dim=1)  # score − β·Σ KL
        advantages = broadcast_to_tokens(_group_baseline(advantage, sequence_rewards, valid, group_size, scale_by_std), mask)
        returns = torch.zeros_like(advantages)
    elif advantage == "reinforce_pp":
        advantages = reinforce_pp_advantages(token_rewards, mask, gamma)
        returns = torch.zeros_like(advantages)
    else:
        raise ValueError(f"unknown advantage estimator {advantage!r}")
    return Targets(advantages.detach(), returns.detach(), token_rewards, kl, valid)


def sequence_kl(kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid samples of the KL summed over each response: what the adaptive controller tracks."""
    rows = mask.sum(dim=1) > 0
    per_sequence = (kl * mask).sum(dim=1)
    return masked_mean(per_sequence, rows.float())
