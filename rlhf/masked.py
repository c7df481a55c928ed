"""Reductions over the response tokens selected by a mask.

Every RLHF statistic (token-mean losses, whitened advantages, KL) is taken over
generated tokens only, so these helpers are the one place that decides how
prompt and padding positions are excluded.

Departures from the usual formulas:
- An empty selection (mask sums to 0) gives 0, not NaN, for the mean and the
  variance, so an all-masked row or batch never poisons a step.
- The unbiased variance of a single selected element is 0 (not NaN).
- Masked positions are excluded with ``torch.where`` rather than multiplied by
  0, so NaN/inf in padding positions (e.g. log-probs of pad tokens) do not leak.
"""

from __future__ import annotations

import torch

__all__ = ["masked_sum", "masked_mean", "masked_var", "masked_whiten"]


def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def masked_sum(
    x: torch.Tensor, mask: torch.Tensor, dim: int | None = None
) -> torch.Tensor:
    """Sum of ``x`` over positions where ``mask`` is set.

    Args:
        x: values, any shape, e.g. [B, T].
        mask: bool or 0/1 float tensor broadcastable to ``x``.
        dim: reduce over this dimension, or over everything when None.

    Returns:
        0-dim tensor if ``dim`` is None, otherwise ``x`` reduced over ``dim``
        (e.g. [B] for dim=-1 on [B, T]).
    """
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    selected = torch.where(_as_bool(mask), x, zero)
    return selected.sum() if dim is None else selected.sum(dim=dim)


def _count(x: torch.Tensor, mask: torch.Tensor, dim: int | None) -> torch.Tensor:
    ones = torch.ones((), dtype=x.dtype, device=x.device)
    return masked_sum(ones.expand_as(x), torch.broadcast_to(_as_bool(mask), x.shape), dim)


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, dim: int | None = None
) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is set; 0 where nothing is selected.

    Args:
        x: values, e.g. [B, T].
        mask: bool or 0/1 tensor broadcastable to ``x``.
        dim: reduce over this dimension, or over everything when None
            (the "token mean" over the whole batch).

    Returns:
        0-dim tensor if ``dim`` is None, otherwise ``x`` reduced over ``dim``.
    """
    total = masked_sum(x, mask, dim)
    count = _count(x, mask, dim)
    nonempty = count > 0
    # Divide by 1 where empty so the unused branch of where() is finite too;
    # otherwise its 0/0 would produce NaN gradients.
    safe_count = torch.where(nonempty, count, torch.ones_like(count))
    return torch.where(nonempty, total / safe_count, torch.zeros_like(total))


def masked_var(
    x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True
) -> torch.Tensor:
    """Variance of all selected elements of ``x`` (one scalar over the whole tensor).

    Args:
        x: values, e.g. [B, T].
        mask: bool or 0/1 tensor broadcastable to ``x``.
        unbiased: divide by n - 1 (Bessel) instead of n.

    Returns:
        0-dim tensor; 0 when fewer than 1 (biased) or 2 (unbiased) elements are selected.
    """
    mean = masked_mean(x, mask)
    sq_dev = (x - mean) ** 2
    total = masked_sum(sq_dev, mask)
    n = _count(x, mask, None)
    denom = n - 1 if unbiased else n
    ok = denom > 0
    return torch.where(ok, total / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(total))


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise the selected elements of ``x`` to zero mean and unit variance.

    Statistics are taken over every selected element of the whole tensor (the
    batch), as is standard for PPO advantage normalisation. The variance is the
    population (biased) one, so the whitened selection has exactly unit variance
    (up to ``eps``).

    Args:
        x: values, e.g. [B, T].
        mask: bool or 0/1 tensor broadcastable to ``x``.
        shift_mean: if False the mean is added back (only the scale changes).
        eps: added to the variance before the square root.

    Returns:
        Tensor shaped like ``x``; 0 at masked positions.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=False)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    zero = torch.zeros((), dtype=whitened.dtype, device=whitened.device)
    return torch.where(_as_bool(mask), whitened, zero)
