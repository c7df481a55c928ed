"""Advantage estimators: GAE (with a critic) and the critic-free ones.

- ``gae``: Schulman et al. 2016, "High-Dimensional Continuous Control Using
  Generalized Advantage Estimation".
- ``grpo_advantages``: Shao et al. 2024, "DeepSeekMath" (GRPO, outcome supervision).
- ``rloo_advantages``: Ahmadian et al. 2024, "Back to Basics: Revisiting
  REINFORCE Style Optimization for Learning from Human Feedback in LLMs".
- ``reinforce_pp_advantages``: Hu 2025, "REINFORCE++".

Departures from the papers:
- ``gae`` and ``reinforce_pp_advantages`` skip masked positions inside a
  response instead of treating them as time steps, so a hole in the mask does
  not cut the episode; with the usual right padding this is identical to the
  textbook recursion with V(s_T) = 0.
- GRPO's std is the unbiased sample std (Bessel, like ``torch.std``); the
  paper does not specify. A group of size 1 has std 0 and advantage 0.
  ``scale_by_std=False`` gives the mean-centred variant of Liu et al. 2025
  ("Dr. GRPO").
- GRPO centres each group on its first element before averaging, so a group
  of identical scores yields exactly 0 (a naive float mean need not equal the
  repeated value).
- All outputs are detached: advantages and returns are regression/weighting
  targets and must not carry gradient into the critic or reward.
"""

from __future__ import annotations

import torch

from rlhf.masked import masked_whiten

__all__ = [
    "gae",
    "grpo_advantages",
    "rloo_advantages",
    "reinforce_pp_advantages",
    "broadcast_to_tokens",
    "CRITIC_FREE_ESTIMATORS",
    "ESTIMATORS",
]

CRITIC_FREE_ESTIMATORS: tuple[str, ...] = ("grpo", "rloo", "reinforce_pp")
ESTIMATORS: tuple[str, ...] = ("gae",) + CRITIC_FREE_ESTIMATORS


def _check_token_shapes(mask: torch.Tensor, **tensors: torch.Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(mask.shape)}")
    for name, t in tensors.items():
        if t.shape != mask.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != mask shape {tuple(mask.shape)}")


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation over response tokens (Schulman et al. 2016).

    δ_t = r_t + γ V_{t+1} - V_t,  A_t = δ_t + γλ A_{t+1},
    with V = 0 and A = 0 after the last response token (the episode ends).

    Args:
        rewards: per-token rewards [B, T] (e.g. from ``kl_penalized_rewards``).
        values: critic values V(s_t) [B, T].
        mask: [B, T], 1 on response tokens.
        gamma: discount γ.
        lam: GAE λ.

    Returns:
        (advantages, returns), each [B, T], detached; returns = advantages + values;
        both 0 at masked positions.
    """
    _check_token_shapes(mask, rewards=rewards, values=values)
    keep = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    rewards = torch.where(keep, rewards.detach(), zero)
    values = torch.where(keep, values.detach(), zero)

    advantages = torch.zeros_like(values)
    # Carried from the next *response* token; padding never updates them, so
    # the first carry (zeros) is exactly the terminal V = 0, A = 0.
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    for t in range(values.shape[1] - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        m = keep[:, t]
        advantages[:, t] = torch.where(m, adv_t, zero)
        next_value = torch.where(m, values[:, t], next_value)
        next_adv = torch.where(m, adv_t, next_adv)

    returns = torch.where(keep, advantages + values, zero)
    return advantages, returns


def _grouped(scores: torch.Tensor, group_size: int, min_size: int) -> torch.Tensor:
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D [B], got shape {tuple(scores.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < min_size:
        raise ValueError(f"group_size must be an int >= {min_size}, got {group_size!r}")
    if scores.shape[0] % group_size != 0:
        raise ValueError(
            f"batch size {scores.shape[0]} is not divisible by group_size {group_size}"
        )
    return scores.detach().reshape(-1, group_size)


def grpo_advantages(
    scores: torch.Tensor,
    group_size: int,
    eps: float = 1e-6,
    scale_by_std: bool = True,
) -> torch.Tensor:
    """Group-relative advantages (GRPO, Shao et al. 2024, outcome supervision).

    A_i = (s_i - mean(group)) / (std(group) + eps), std unbiased (n - 1).

    Args:
        scores: [B] sequence scores, consecutive blocks of ``group_size``
            samples share a prompt.
        group_size: samples per prompt.
        eps: added to the std so a constant group gives 0, not NaN.
        scale_by_std: divide by the group std (False: mean-centring only).

    Returns:
        [B] detached advantages (use ``broadcast_to_tokens`` for [B, T]).
    """
    groups = _grouped(scores, group_size, min_size=1)
    anchor = groups[:, :1]
    # Centre on a member first: identical scores then give exact zeros.
    offsets = groups - anchor
    centred = offsets - offsets.mean(dim=1, keepdim=True)
    if scale_by_std:
        if group_size > 1:
            std = torch.sqrt((centred**2).sum(dim=1, keepdim=True) / (group_size - 1))
        else:
            std = torch.zeros_like(centred)
        centred = centred / (std + eps)
    return centred.reshape(-1)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE Leave-One-Out advantages (Ahmadian et al. 2024).

    A_i = s_i - (1 / (k - 1)) Σ_{j≠i} s_j within each group of k samples.

    Args:
        scores: [B] sequence scores in consecutive groups of ``group_size``.
        group_size: k >= 2 (the baseline needs at least one other sample).

    Returns:
        [B] detached advantages.
    """
    groups = _grouped(scores, group_size, min_size=2)
    others_mean = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others_mean).reshape(-1)


def reinforce_pp_advantages(
    token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0
) -> torch.Tensor:
    """REINFORCE++ advantages (Hu 2025).

    G_t = Σ_{s>=t} γ^{s-t} r_s within each response, then whitened over all
    response tokens of the batch (global batch normalisation, no critic).

    Args:
        token_rewards: [B, T] per-token rewards (score on the last token,
            KL penalty on every token).
        mask: [B, T], 1 on response tokens.
        gamma: discount.

    Returns:
        [B, T] detached advantages, 0 at masked positions.
    """
    _check_token_shapes(mask, token_rewards=token_rewards)
    keep = mask.bool()
    zero = torch.zeros((), dtype=token_rewards.dtype, device=token_rewards.device)
    rewards = torch.where(keep, token_rewards.detach(), zero)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        candidate = rewards[:, t] + gamma * running
        running = torch.where(keep[:, t], candidate, running)
        returns[:, t] = torch.where(keep[:, t], candidate, zero)
    return masked_whiten(returns, keep)


def broadcast_to_tokens(seq_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Copy a per-sequence scalar onto every response token.

    Args:
        seq_values: [B].
        mask: [B, T], 1 on response tokens.

    Returns:
        [B, T] with ``seq_values[b]`` where ``mask[b, t]`` is set, 0 elsewhere.
    """
    if seq_values.dim() != 1 or mask.dim() != 2 or seq_values.shape[0] != mask.shape[0]:
        raise ValueError(
            f"expected seq_values [B] and mask [B, T], got {tuple(seq_values.shape)} "
            f"and {tuple(mask.shape)}"
        )
    expanded = seq_values[:, None].expand(mask.shape)
    zero = torch.zeros((), dtype=seq_values.dtype, device=seq_values.device)
    return torch.where(mask.bool(), expanded, zero)
