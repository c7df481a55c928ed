"""Per-token KL estimators and the KL-coefficient controllers.

Estimators follow Schulman, "Approximating KL Divergence" (2020), for
KL(p || q) with p the policy and q the reference, sampled from p:
``k1 = log p - log q``, ``k2 = ½ (log p - log q)²``, ``k3 = q/p - 1 - log(q/p)``.

The adaptive controller follows Ziegler et al. 2019, "Fine-Tuning Language
Models from Human Preferences" (section 2.2).

Departures from the papers:
- k3 is evaluated as ``expm1(r) - r`` with ``r = log q - log p``, which is the
  same quantity but exact near r = 0 (a plain ``exp(r) - 1 - r`` loses all
  precision for small r).
- The controller takes ``n_steps`` (samples since the last update) as the
  paper's K_β numerator, so K_β = n_steps / horizon.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = [
    "KL_ESTIMATORS",
    "kl_estimate",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "FixedKLController",
    "AdaptiveKLController",
]


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 = log p - log q; unbiased but high-variance, can be negative. Shapes [B, T]."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (log p - log q)²; biased, low-variance, non-negative. Shapes [B, T]."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 = q/p - 1 - log(q/p); unbiased and non-negative. Shapes [B, T]."""
    log_ratio = ref_logprobs - logprobs
    return torch.expm1(log_ratio) - log_ratio


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) (Schulman 2020).

    Args:
        logprobs: log p of the sampled tokens under the policy, [B, T].
        ref_logprobs: log q of the same tokens under the reference, [B, T].
        kind: one of ``KL_ESTIMATORS`` ("k1", "k2", "k3").

    Returns:
        [B, T] estimate; exactly 0 where the two log-probs are equal. No masking
        is applied: the caller multiplies by the response mask.
    """
    try:
        fn = KL_ESTIMATORS[kind]
    except KeyError:
        raise ValueError(
            f"unknown KL estimator {kind!r}; valid: {', '.join(sorted(KL_ESTIMATORS))}"
        ) from None
    return fn(logprobs, ref_logprobs)


def _check_number(name: str, value: float, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {kind} number, got {value!r}")
    return value


class FixedKLController:
    """A constant KL coefficient β (Stiennon et al. 2020 use a fixed β)."""

    def __init__(self, coef: float) -> None:
        self.value: float = _check_number("coef", coef, positive=False)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: a fixed coefficient ignores the observed KL."""

    def state_dict(self) -> dict[str, float]:
        """Plain JSON-serialisable state."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore from ``state_dict()`` output."""
        self.value = _check_number("value", state["value"], positive=False)


class AdaptiveKLController:
    """Proportional controller steering the observed KL towards ``target``.

    Ziegler et al. 2019: e = clip(KL / KL_target - 1, -0.2, 0.2),
    β ← β (1 + K_β e) with K_β = n_steps / horizon.
    """

    ERROR_CLIP = 0.2

    def __init__(self, init_coef: float, target: float, horizon: float) -> None:
        self.value: float = _check_number("init_coef", init_coef, positive=False)
        self.target: float = _check_number("target", target, positive=True)
        self.horizon: float = _check_number("horizon", horizon, positive=True)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adjust ``value`` after ``n_steps`` samples whose mean KL was ``current_kl``."""
        current_kl = float(current_kl)
        if n_steps < 0:
            raise ValueError(f"n_steps must be non-negative, got {n_steps}")
        error = min(max(current_kl / self.target - 1.0, -self.ERROR_CLIP), self.ERROR_CLIP)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        """Plain JSON-serialisable state."""
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore from ``state_dict()`` output."""
        self.value = _check_number("value", state["value"], positive=False)
        self.target = _check_number("target", state["target"], positive=True)
        self.horizon = _check_number("horizon", state["horizon"], positive=True)
