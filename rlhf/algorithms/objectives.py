"""What a trained role optimises, per mode: the one table from (mode, role) to a micro-batch loss.

A trainer replica calls `objective(model, micro_batch) -> (loss, metrics)`; the record type of
the micro-batch (Experience, SFTBatch, PreferenceBatch, DistillBatch) is the one its mode's driver builds.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from rlhf.algorithms.distill_losses import distill_or_sft_micro_batch_loss
from rlhf.algorithms.ppo_losses import critic_micro_batch_loss, policy_micro_batch_loss
from rlhf.algorithms.preference_losses import dpo_micro_batch_loss, reward_model_micro_batch_loss
from rlhf.algorithms.sft_losses import sft_micro_batch_loss
from rlhf.config import Config

Objective = Callable[[torch.nn.Module, object], tuple[torch.Tensor, dict[str, float]]]


def _dpo(cfg: Config) -> Objective:
    d = cfg.algorithm.dpo
    return partial(dpo_micro_batch_loss, beta=d.beta, loss_type=d.loss_type, label_smoothing=d.label_smoothing,
                   simpo_gamma=d.simpo_gamma)


def _distill(cfg: Config) -> Objective:
    d = cfg.algorithm.distill
    return partial(distill_or_sft_micro_batch_loss, divergence=d.divergence, jsd_beta=d.jsd_beta,
                   temperature=d.temperature)


def _ppo_policy(cfg: Config) -> Objective:
    a = cfg.algorithm
    return partial(policy_micro_batch_loss, clip_eps=a.clip_eps, entropy_coef=a.entropy_coef,
                   clip_eps_high=a.clip_eps_high, loss_agg=a.loss_agg, ratio_level=a.ratio_level,
                   is_correction=a.is_correction, is_cap=a.is_cap, norm_len=cfg.rollout.max_new_tokens,
                   kl_in_loss=a.kl.placement == "loss", kl_estimator=a.kl.estimator)


OBJECTIVES: dict[tuple[str, str], Callable[[Config], Objective]] = {
    ("ppo", "policy"): _ppo_policy,
    ("ppo", "critic"): lambda cfg: partial(critic_micro_batch_loss, value_clip_eps=cfg.algorithm.value_clip_eps),
    ("sft", "policy"): lambda cfg: sft_micro_batch_loss,
    ("dpo", "policy"): _dpo,
    ("rlaif", "policy"): _dpo,
    ("rm", "reward"): lambda cfg: reward_model_micro_batch_loss,
    ("distill", "policy"): _distill,
}


def build_objective(cfg: Config, role: str) -> Objective:
    key = (cfg.algorithm.name, role)
    if key not in OBJECTIVES:
        raise ValueError(f"algorithm.name={key[0]} trains no {role!r} role")
    return OBJECTIVES[key](cfg)
