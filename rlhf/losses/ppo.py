"""PPO for language models: clipped policy surrogate, clipped value loss,
entropy, and KL-penalised token rewards.

- Clipped surrogate and value loss: Schulman et al. 2017, "Proximal Policy
  Optimization Algorithms".
- KL-penalised reward r_t = -β KL_t (+ score on the last token): Stiennon et
  al. 2020, "Learning to summarize from human feedback"; Ouyang et al. 2022
  ("InstructGPT").

Departures from the papers:
- The policy loss is a token mean over all response tokens of the batch by default
  (long responses weigh more, as in most LLM PPO code); `loss_agg` picks another
  aggregation (rlhf.losses.aggregation). The value loss is always a token mean.
- Asymmetric clipping clip(r, 1-ε_low, 1+ε_high) follows DAPO (Yu et al. 2025); the
  sequence-level ratio exp(mean_t log r_t) follows GSPO (Zheng et al. 2025), here
  clipped with the same ε's and applied to every token of its sequence.
- ``approx_kl`` is the k2 estimator ½ (log π - log π_old)², which is
  non-negative and low-variance (Schulman 2020); it is a diagnostic only.
- ``clipfrac`` counts a token as clipped only when the clipped term is
  strictly smaller than the unclipped one (i.e. the min really picked it).
- The value loss clips V around the rollout-time value, a trick from the
  OpenAI baselines implementation rather than the PPO paper itself.
- Stats are detached 0-dim tensors (no host sync inside the micro-step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.kl import kl_estimate
from rlhf.losses.aggregation import aggregate_with_denominator, loss_denominator
from rlhf.masked import masked_mean

__all__ = [
    "PolicyLossStats",
    "ValueLossStats",
    "RATIO_LEVELS",
    "clipped_surrogate",
    "ppo_policy_loss",
    "sequence_log_ratio",
    "value_loss",
    "entropy_from_logits",
    "kl_penalized_rewards",
]


@dataclass(frozen=True)
class PolicyLossStats:
    """Diagnostics of one policy-loss evaluation (detached 0-dim tensors)."""

    clipfrac: torch.Tensor
    approx_kl: torch.Tensor


@dataclass(frozen=True)
class ValueLossStats:
    """Diagnostics of one value-loss evaluation (detached 0-dim tensor)."""

    clipfrac: torch.Tensor


def _zero(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=like.dtype, device=like.device)


RATIO_LEVELS = ("token", "sequence")


def sequence_log_ratio(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's per-sequence log-ratio: the mean over a row's masked tokens of log π - log π_old,
    broadcast to [B, T] (differentiable; 0 for an all-masked row).

    Args:
        log_ratio: [B, T] per-token log π - log π_old, already 0 on padding.
        mask: [B, T], 1 on response tokens.
    """
    keep = mask.bool()
    lengths = keep.sum(dim=1, keepdim=True).to(log_ratio.dtype).clamp(min=1)
    return (log_ratio.sum(dim=1, keepdim=True) / lengths).expand_as(log_ratio)


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    clip_eps_high: float | None = None,
    ratio_level: str = "token",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token negated PPO surrogate -min(r A, clip(r, 1-ε_low, 1+ε_high) A), before aggregation.

    Args:
        logprobs, old_logprobs, advantages, mask: [B, T] as in `ppo_policy_loss`.
        clip_eps: ε_low (and ε_high when `clip_eps_high` is None).
        clip_eps_high: ε_high (DAPO's clip-higher).
        ratio_level: `token` (r_t per token) or `sequence` (GSPO: one r per row, exp of the mean
            token log-ratio, on every token of the row).

    Returns:
        (loss [B, T] 0 on padding, clipped [B, T] bool, token log-ratio [B, T] 0 on padding).
    """
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"unknown ratio_level {ratio_level!r}; valid: {', '.join(RATIO_LEVELS)}")
    high = clip_eps if clip_eps_high is None else clip_eps_high
    keep = mask.bool()
    # Zero the log-ratio on padding before exp(): garbage there could overflow
    # to inf and turn the (unused) gradient into NaN.
    log_ratio = torch.where(keep, logprobs - old_logprobs.detach(), _zero(logprobs))
    advantages = torch.where(keep, advantages.detach(), _zero(logprobs))
    used = log_ratio if ratio_level == "token" else sequence_log_ratio(log_ratio, keep)
    ratio = torch.exp(used)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high) * advantages
    loss_mat = torch.where(keep, -torch.minimum(unclipped, clipped), _zero(logprobs))
    return loss_mat, (clipped < unclipped) & keep, log_ratio


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    clip_eps_high: float | None = None,
    loss_agg: str = "token_mean",
    weights: torch.Tensor | None = None,
    *,
    ratio_level: str = "token",
    norm_len: int | None = None,
    denominator: float | None = None,
) -> tuple[torch.Tensor, PolicyLossStats]:
    """PPO clipped surrogate loss (Schulman et al. 2017, eq. 7), negated for descent.

    L = aggregate over masked tokens of -w_t min(r A, clip(r, 1-ε_low, 1+ε_high) A),
    r = exp(log π - log π_old) (per token, or per sequence for GSPO).

    Args:
        logprobs: [B, T] log π of the sampled tokens under the current policy
            (differentiable).
        old_logprobs: [B, T] log π_old from the rollout.
        advantages: [B, T].
        mask: [B, T], 1 on response tokens.
        clip_eps: ε (ε_low).
        clip_eps_high: ε_high; None means ε (symmetric, the PPO paper).
        loss_agg: one of rlhf.losses.aggregation.LOSS_AGG_MODES.
        weights: [B, T] detached per-token weights (importance correction), None for 1.
        ratio_level: `token` or `sequence` (GSPO).
        norm_len: the constant length of `seq_mean_token_sum_norm`.
        denominator: the whole mini-batch's `loss_denominator` when this is one micro-batch of it;
            None divides by this batch's own.

    Returns:
        (0-dim loss, PolicyLossStats(clipfrac, approx_kl)).
    """
    keep = mask.bool()
    loss_mat, clipped, log_ratio = clipped_surrogate(logprobs, old_logprobs, advantages, mask, clip_eps,
                                                     clip_eps_high, ratio_level)
    if weights is not None:
        loss_mat = loss_mat * weights.detach()
    if loss_agg == "token_mean" and denominator is None:
        loss = masked_mean(loss_mat, keep)  # today's expression, bit for bit
    else:
        if denominator is None:
            denominator = loss_denominator(mask, loss_agg, norm_len)
        loss = aggregate_with_denominator(loss_mat, mask, loss_agg, denominator)

    with torch.no_grad():
        clipfrac = masked_mean(clipped.to(log_ratio.dtype), keep)
        approx_kl = masked_mean(0.5 * log_ratio**2, keep)
    return loss, PolicyLossStats(clipfrac=clipfrac, approx_kl=approx_kl)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float | None,
) -> tuple[torch.Tensor, ValueLossStats]:
    """Clipped value loss ½ max((V - R)², (clip(V, V_old ± ε) - R)²), token-mean.

    Args:
        values: [B, T] current critic values (differentiable).
        old_values: [B, T] critic values at rollout time.
        returns: [B, T] targets R (e.g. from ``gae``).
        mask: [B, T], 1 on response tokens.
        clip_eps: ε, or None for the plain squared error.

    Returns:
        (0-dim loss, ValueLossStats(clipfrac)); clipfrac is the fraction of
        tokens where the clipped error was strictly larger (and so chosen).
    """
    keep = mask.bool()
    # Sanitise padding before any arithmetic: a NaN target there would otherwise
    # reach values.grad through the chain rule (0 * NaN) even though masked out.
    zero = _zero(values)
    values = torch.where(keep, values, zero)
    returns = torch.where(keep, returns.detach(), zero)
    err_unclipped = (values - returns) ** 2
    if clip_eps is None:
        loss = 0.5 * masked_mean(err_unclipped, keep)
        return loss, ValueLossStats(clipfrac=torch.zeros((), dtype=values.dtype, device=values.device))

    old_values = torch.where(keep, old_values.detach(), zero)
    clipped_values = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), keep)
    with torch.no_grad():
        clipfrac = masked_mean((err_clipped > err_unclipped).to(values.dtype), keep)
    return loss, ValueLossStats(clipfrac=clipfrac)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at every position.

    H = -Σ_v p_v log p_v with log p = logits - logsumexp(logits), in float32.

    Args:
        logits: [B, T, V] (any float dtype).

    Returns:
        [B, T] float32 entropy (unmasked; the caller applies the response mask).
    """
    logits = logits.float()
    log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    p = torch.exp(log_p)
    # p log p -> 0 as p -> 0, but 0 * (-inf) is NaN for -inf (banned) logits.
    plogp = torch.where(p > 0, p * log_p, torch.zeros((), dtype=p.dtype, device=p.device))
    return -plogp.sum(dim=-1)


def kl_penalized_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float | torch.Tensor,
    kind: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rewards r_t = -β KL_t, plus the sequence score on the last response token.

    Stiennon et al. 2020 / Ouyang et al. 2022: R(x, y) = r_φ(x, y) - β log(π/π_ref).

    Args:
        scores: [B] reward-model (or verifier) score per sequence.
        logprobs: [B, T] policy log-probs of the sampled tokens.
        ref_logprobs: [B, T] reference log-probs of the same tokens.
        mask: [B, T], 1 on response tokens (any padding layout).
        kl_coef: β.
        kind: KL estimator name, see ``rlhf.kl.KL_ESTIMATORS``.

    Returns:
        (token_rewards, kl), each [B, T] and 0 off the mask. The score goes on
        the last position where mask == 1; an all-masked row gets no score.
    """
    if scores.dim() != 1 or mask.dim() != 2 or scores.shape[0] != mask.shape[0]:
        raise ValueError(
            f"expected scores [B] and mask [B, T], got {tuple(scores.shape)} and {tuple(mask.shape)}"
        )
    keep = mask.bool()
    zero = _zero(logprobs)
    # Sanitise padding first so garbage there cannot produce NaN gradients.
    logprobs = torch.where(keep, logprobs, zero)
    ref_logprobs = torch.where(keep, ref_logprobs, zero)
    kl = kl_estimate(logprobs, ref_logprobs, kind)
    rewards = -kl_coef * kl

    T = mask.shape[1]
    positions = torch.arange(1, T + 1, device=mask.device).expand_as(keep)
    last = (positions * keep).amax(dim=1) - 1  # -1 for an all-masked row
    has_response = last >= 0
    onehot = torch.nn.functional.one_hot(last.clamp(min=0), T).bool() & has_response[:, None]
    rewards = rewards + torch.where(onehot, scores[:, None].to(rewards.dtype), _zero(rewards))
    return rewards, kl
