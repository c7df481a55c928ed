"""KL to the reference as a loss term instead of a reward penalty.

GRPO (Shao et al. 2024, "DeepSeekMath", eq. 3) adds β · D_KL(π || π_ref) to the loss, estimated per
token with k3 on the policy's samples, rather than subtracting β·KL from the reward. The gradient
then flows through log π directly (the reward-side KL reaches it only through the advantages).

Departure: the term is returned per token (0 on padding) so that it is aggregated with the policy
loss's own `loss_agg`, like the rest of the loss.
"""
from __future__ import annotations

import torch

from rlhf.kl import kl_estimate

__all__ = ["kl_loss_matrix"]


def kl_loss_matrix(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, coef: float,
                   estimator: str = "k3") -> torch.Tensor:
    """coef · KL_estimator(log π, log π_ref) per token.

    Args:
        logprobs: [B, T] current policy log-probs (differentiable).
        ref_logprobs: [B, T] reference log-probs (detached).
        mask: [B, T], 1 on response tokens.
        coef: β.
        estimator: k1, k2 or k3 (rlhf.kl).

    Returns:
        [B, T], 0 on padding.
    """
    keep = mask.bool()
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    # Sanitise padding before the estimator: exp() of garbage there would poison the gradient.
    logprobs = torch.where(keep, logprobs, zero)
    ref = torch.where(keep, ref_logprobs.detach().to(logprobs.dtype), zero)
    return torch.where(keep, coef * kl_estimate(logprobs, ref, estimator), zero)
