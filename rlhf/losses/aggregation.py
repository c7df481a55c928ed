"""How a per-token loss matrix becomes one number: the loss-aggregation modes.

- `token_mean`: Σ(loss·mask) / Σmask, every token of the batch weighs the same (PPO in most LLM code).
- `seq_mean_token_mean`: the mean over sequences of each sequence's token mean (GRPO as written in
  Shao et al. 2024, "DeepSeekMath"; GSPO, Zheng et al. 2025).
- `seq_mean_token_sum`: the mean over sequences of each sequence's token sum.
- `seq_mean_token_sum_norm`: Σ(loss·mask) / (B · norm_len), a constant normaliser that does not depend
  on response lengths (Dr. GRPO, Liu et al. 2025, "Understanding R1-Zero-Like Training").

Every mode is `numerator / denominator`, where the numerator is a sum over rows (so it splits over
micro-batches and replicas) and the denominator a count over the whole batch. A trainer that sees only
part of a mini-batch divides its part's numerator by the whole mini-batch's denominator
(`loss_denominator` of the full mini-batch): the parts then add up to the big batch's loss exactly.

Departures: sequences with no masked token are left out of the `seq_mean_*` counts (they carry no
loss), but counted in B of `seq_mean_token_sum_norm` (its normaliser is a constant by design); an
empty selection gives 0, never NaN.
"""
from __future__ import annotations

from typing import Optional

import torch

LOSS_AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")

__all__ = ["LOSS_AGG_MODES", "aggregate", "loss_numerator", "loss_denominator", "aggregate_with_denominator"]


def _check_mode(mode: str) -> None:
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(LOSS_AGG_MODES)}")


def loss_numerator(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """The additive part of the aggregate: a sum over rows, 0-dim.

    Args:
        loss_mat: [B, T] per-token loss (differentiable).
        mask: [B, T], 1 on the tokens that count.
        mode: one of ``LOSS_AGG_MODES``.
    """
    _check_mode(mode)
    keep = mask.bool()
    zero = torch.zeros((), dtype=loss_mat.dtype, device=loss_mat.device)
    # where(), not a product: NaN/inf on padding must not reach the sum or its gradient.
    token_sums = torch.where(keep, loss_mat, zero).sum(dim=1)
    if mode != "seq_mean_token_mean":
        return token_sums.sum()
    lengths = keep.sum(dim=1).to(loss_mat.dtype)
    return (token_sums / lengths.clamp(min=1)).sum()


def loss_denominator(mask: torch.Tensor, mode: str, norm_len: Optional[int] = None) -> float:
    """What the numerator of a whole batch is divided by (a plain float: it is never differentiated).

    token_mean: masked tokens; seq_mean_token_mean / seq_mean_token_sum: rows with ≥1 masked token;
    seq_mean_token_sum_norm: B · norm_len (B counts every row).
    """
    _check_mode(mode)
    keep = mask.bool()
    if mode == "token_mean":
        return float(keep.sum())
    if mode == "seq_mean_token_sum_norm":
        if norm_len is None or norm_len < 1:
            raise ValueError(f"seq_mean_token_sum_norm needs norm_len >= 1, got {norm_len!r}")
        return float(mask.shape[0] * norm_len)
    return float(keep.any(dim=1).sum())


def aggregate_with_denominator(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str,
                               denominator: float) -> torch.Tensor:
    """`loss_numerator / denominator`, 0 when the denominator is 0 (nothing to train on)."""
    numerator = loss_numerator(loss_mat, mask, mode)
    return numerator / denominator if denominator > 0 else numerator * 0.0


def aggregate(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str = "token_mean",
              norm_len: Optional[int] = None) -> torch.Tensor:
    """Aggregate a per-token loss over a batch.

    Args:
        loss_mat: [B, T] per-token loss.
        mask: [B, T], 1 on response tokens.
        mode: one of ``LOSS_AGG_MODES``.
        norm_len: the constant length of `seq_mean_token_sum_norm` (rollout.max_new_tokens).

    Returns:
        0-dim loss; 0 for an all-masked batch.
    """
    return aggregate_with_denominator(loss_mat, mask, mode, loss_denominator(mask, mode, norm_len))
