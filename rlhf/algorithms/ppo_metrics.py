"""The metrics one PPO step logs (metrics.jsonl and W&B keys; README "Metrics" lists them)."""
from __future__ import annotations

from typing import Optional

import torch

from rlhf.masked import masked_mean
from rlhf.records import RolloutBatch


def ppo_step_metrics(
    step: int,
    rollout: RolloutBatch,
    scores: torch.Tensor,
    valid: torch.Tensor,
    mask: torch.Tensor,
    old_logprobs: Optional[torch.Tensor],
    kl: float,
    kl_coef: float,
    train_metrics: dict,
    timings: dict,
    has_critic: bool,
) -> dict:
    """`old_logprobs`: the policy's recomputed ones, to measure the engine/trainer gap; None when the
    engine's own were used (the gap is zero by construction)."""
    good = scores[valid]
    lengths = rollout.response_mask.sum(dim=1)
    response_tokens = float(lengths.sum())
    metrics = {
        "reward/mean": float(good.mean()) if len(good) else float("nan"),
        "reward/std": float(good.std()) if len(good) > 1 else 0.0,
        "reward/invalid": int((~valid).sum()),
        "kl/mean": kl,
        "kl/coef": kl_coef,
        "response_length/mean": float(lengths.mean()),
        "sequence_length/mean": float(rollout.attention_mask.sum(dim=1).float().mean()),
        "rollout/policy_lag": step - 1 - rollout.policy_version,
        "train/skipped_update": 0 if train_metrics else 1,
        **train_metrics,
        **{f"timing/{k}_s": v for k, v in timings.items()},
        "throughput/tokens_per_s": response_tokens / max(timings["step"], 1e-9),
        "throughput/generate_tokens_per_s": response_tokens / max(timings["generate"], 1e-9),
    }
    if old_logprobs is not None:
        metrics["rollout/logprob_abs_diff"] = float(masked_mean((rollout.rollout_logprobs - old_logprobs).abs(), mask))
    if not has_critic:
        metrics.setdefault("critic/loss", 0.0)
    return metrics
