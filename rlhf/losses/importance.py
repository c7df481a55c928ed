"""Importance-sampling correction of the rollout/training mismatch, and its diagnostics.

The rollout engine samples from π_rollout (vLLM kernels, bf16 or fp8 rounding) while PPO's ratio
assumes samples from π_old (the trainer's numbers). Weighting each token's loss by
π_old / π_rollout corrects the gradient; truncating (TIS) or masking (MIS) large weights bounds its
variance. Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"
(TIS); Liu et al. 2025, "When Speed Kills Stability" (token and sequence-level masking, MIS).

- `tis`: w_t = min(exp(old_t - rollout_t), cap).
- `mis`: w_t = exp(old_t - rollout_t) where ≤ cap, else 0.
- `seq_tis` / `seq_mis`: the same on the sequence ratio exp(Σ_t (old_t - rollout_t)) over the
  row's masked tokens, broadcast to every token of the row.

Departures: weights are detached and 0 on padding; an all-masked row has sequence ratio exp(0) = 1
(but every one of its weights is 0, being padding). The log-ratio is clamped at 80 before exp() so a
huge disagreement saturates instead of overflowing to inf (the cap acts on it either way).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.kl import kl_k3
from rlhf.masked import masked_mean

IS_MODES = ("none", "tis", "mis", "seq_tis", "seq_mis")

__all__ = ["IS_MODES", "MismatchStats", "importance_weights", "mismatch_stats"]

_MAX_LOG_RATIO = 80.0


def importance_weights(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor,
                       mode: str, cap: float = 2.0) -> torch.Tensor:
    """Per-token importance weights π_old / π_rollout, truncated or masked at `cap`.

    Args:
        old_logprobs: [B, T] log π_old of the sampled tokens (the trainer's numbers).
        rollout_logprobs: [B, T] the engine's log-probs of the same tokens.
        mask: [B, T], 1 on response tokens.
        mode: one of ``IS_MODES``; `none` gives the mask itself (weight 1).
        cap: the truncation / masking threshold (> 0).

    Returns:
        [B, T] detached weights, 0 on padding.
    """
    if mode not in IS_MODES:
        raise ValueError(f"unknown is_correction {mode!r}; valid: {', '.join(IS_MODES)}")
    keep = mask.bool()
    dtype = old_logprobs.dtype
    zero = torch.zeros((), dtype=dtype, device=old_logprobs.device)
    if mode == "none":
        return keep.to(dtype)
    with torch.no_grad():
        log_ratio = torch.where(keep, old_logprobs.detach() - rollout_logprobs.detach().to(dtype), zero)
        if mode.startswith("seq_"):
            log_ratio = log_ratio.sum(dim=1, keepdim=True).expand_as(log_ratio)
        ratio = torch.exp(log_ratio.clamp(max=_MAX_LOG_RATIO))
        if mode.endswith("tis"):
            weights = ratio.clamp(max=cap)
        else:
            weights = torch.where(ratio <= cap, ratio, zero)
        return torch.where(keep, weights, zero)


@dataclass(frozen=True)
class MismatchStats:
    """How far the engine's log-probs are from the trainer's (detached 0-dim tensors)."""

    mismatch_kl: torch.Tensor
    """Token mean of k3 = exp(r) - 1 - r, r = rollout - old: KL(π_old || π_rollout) estimated on π_rollout's samples."""
    is_weight_mean: torch.Tensor
    """Token mean of the importance weights (1 for `none`)."""
    is_clipped_frac: torch.Tensor
    """Fraction of tokens whose weight the cap changed (truncated, or masked to 0)."""


def mismatch_stats(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor,
                   mode: str, cap: float = 2.0) -> MismatchStats:
    """Diagnostics of `importance_weights` on one batch (shapes as there)."""
    keep = mask.bool()
    dtype = old_logprobs.dtype
    zero = torch.zeros((), dtype=dtype, device=old_logprobs.device)
    with torch.no_grad():
        old = torch.where(keep, old_logprobs.detach(), zero)
        rollout = torch.where(keep, rollout_logprobs.detach().to(dtype), zero)
        weights = importance_weights(old, rollout, mask, mode, cap)
        uncapped = importance_weights(old, rollout, mask, mode, float("inf")) if mode != "none" else weights
        clipped = (weights != uncapped).to(dtype)
        return MismatchStats(mismatch_kl=masked_mean(kl_k3(old, rollout), keep),
                             is_weight_mean=masked_mean(weights, keep),
                             is_clipped_frac=masked_mean(clipped, keep))
