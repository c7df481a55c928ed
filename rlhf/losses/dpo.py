"""Direct preference optimisation losses over summed sequence log-probs.

- ``sigmoid``: Rafailov et al. 2023, "Direct Preference Optimization".
- ``cdpo``: conservative DPO with label smoothing ε, Mitchell 2023,
  "A note on DPO with noisy preferences & relationship to IPO".
- ``ipo``: Azar et al. 2023, "A General Theoretical Paradigm to Understand
  Learning from Human Preferences".
- ``simpo``: Meng et al. 2024, "SimPO: Simple Preference Optimization with a
  Reference-Free Reward".

Departures from the papers:
- ``sigmoid`` with ``label_smoothing > 0`` is the cDPO formula; ``cdpo`` is the
  same formula but insists on ``label_smoothing > 0`` so a config cannot
  silently fall back to plain DPO.
- IPO uses whatever log-probs the caller passes (the paper's h is on sequence
  log-likelihoods; some implementations average per token instead).
- SimPO's margin γ is subtracted outside β, i.e. -log σ(β Δ - γ), as written
  in the paper's equation, not the γ/β ratio of its reference code.
- ``label_smoothing`` also applies to SimPO (sigmoid family); it is rejected
  for IPO, where it has no meaning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DPO_LOSS_TYPES", "dpo_loss"]

DPO_LOSS_TYPES: tuple[str, ...] = ("sigmoid", "cdpo", "ipo", "simpo")


def _neg_logsigmoid(x: torch.Tensor) -> torch.Tensor:
    # -log σ(x) = softplus(-x), stable for large |x|.
    return F.softplus(-x)


def _smoothed_neg_logsigmoid(logits: torch.Tensor, eps: float) -> torch.Tensor:
    # cDPO: the label is flipped with probability eps, so the loss is the
    # expected BCE under that noise.
    return (1 - eps) * _neg_logsigmoid(logits) + eps * _neg_logsigmoid(-logits)


def _lengths(name: str, lengths: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if lengths is None:
        raise ValueError(f"loss_type 'simpo' requires {name}")
    lengths = torch.as_tensor(lengths, device=like.device).to(like.dtype)
    if lengths.shape != like.shape:
        raise ValueError(f"{name} shape {tuple(lengths.shape)} != logps shape {tuple(like.shape)}")
    if bool((lengths <= 0).any()):
        raise ValueError(f"{name} must be positive")
    return lengths


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None,
    ref_rejected_logps: torch.Tensor | None,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    *,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    simpo_gamma: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair preference loss and implicit rewards.

    With h = (π_c - ref_c) - (π_r - ref_r) (summed sequence log-probs):
      sigmoid/cdpo: -(1-ε) log σ(βh) - ε log σ(-βh)
      ipo:          (h - 1/(2β))²
      simpo:        -(1-ε) log σ(βΔ - γ) - ε log σ(-(βΔ - γ)),  Δ = π_c/|c| - π_r/|r|

    Args:
        policy_chosen_logps, policy_rejected_logps: [B] summed log-probs under the policy.
        ref_chosen_logps, ref_rejected_logps: [B] under the reference; may be
            None for ``simpo``.
        beta: β > 0.
        loss_type: one of ``DPO_LOSS_TYPES``.
        label_smoothing: ε in [0, 0.5), the assumed preference-flip rate.
        chosen_lengths, rejected_lengths: [B] response token counts (simpo only).
        simpo_gamma: SimPO target margin γ.

    Returns:
        (losses [B], chosen_rewards [B], rejected_rewards [B]); rewards are
        detached: β(π - ref) for reference types, β π / len for simpo.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid: {', '.join(DPO_LOSS_TYPES)}")
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    if loss_type == "cdpo" and label_smoothing == 0:
        raise ValueError("loss_type 'cdpo' requires label_smoothing > 0")
    if loss_type == "ipo" and label_smoothing != 0:
        raise ValueError("label_smoothing is not defined for loss_type 'ipo'")
    if policy_chosen_logps.shape != policy_rejected_logps.shape or policy_chosen_logps.dim() != 1:
        raise ValueError("policy_chosen_logps and policy_rejected_logps must both be [B]")

    if loss_type == "simpo":
        c_len = _lengths("chosen_lengths", chosen_lengths, policy_chosen_logps)
        r_len = _lengths("rejected_lengths", rejected_lengths, policy_rejected_logps)
        chosen_reward = beta * policy_chosen_logps / c_len
        rejected_reward = beta * policy_rejected_logps / r_len
        logits = chosen_reward - rejected_reward - simpo_gamma
        losses = _smoothed_neg_logsigmoid(logits, label_smoothing)
        return losses, chosen_reward.detach(), rejected_reward.detach()

    if ref_chosen_logps is None or ref_rejected_logps is None:
        raise ValueError(f"loss_type {loss_type!r} requires reference log-probs")
    chosen_logratio = policy_chosen_logps - ref_chosen_logps.detach()
    rejected_logratio = policy_rejected_logps - ref_rejected_logps.detach()
    h = chosen_logratio - rejected_logratio

    if loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:  # sigmoid, cdpo
        losses = _smoothed_neg_logsigmoid(beta * h, label_smoothing)
    return losses, (beta * chosen_logratio).detach(), (beta * rejected_logratio).detach()
