"""Training losses: PPO (policy, value, entropy, shaped rewards; aggregation modes, importance correction,
KL as a loss, overlong shaping), DPO family, reward model."""

from rlhf.losses.aggregation import (
    LOSS_AGG_MODES,
    aggregate,
    aggregate_with_denominator,
    loss_denominator,
    loss_numerator,
)
from rlhf.losses.dpo import DPO_LOSS_TYPES, dpo_loss
from rlhf.losses.importance import IS_MODES, MismatchStats, importance_weights, mismatch_stats
from rlhf.losses.kl_loss import kl_loss_matrix
from rlhf.losses.overlong import overlong_penalty, truncated_rows
from rlhf.losses.ppo import (
    RATIO_LEVELS,
    PolicyLossStats,
    ValueLossStats,
    clipped_surrogate,
    entropy_from_logits,
    kl_penalized_rewards,
    ppo_policy_loss,
    sequence_log_ratio,
    value_loss,
)
from rlhf.losses.reward_model import bradley_terry_loss

__all__ = [
    "IS_MODES",
    "LOSS_AGG_MODES",
    "MismatchStats",
    "RATIO_LEVELS",
    "aggregate",
    "aggregate_with_denominator",
    "clipped_surrogate",
    "importance_weights",
    "kl_loss_matrix",
    "loss_denominator",
    "loss_numerator",
    "mismatch_stats",
    "overlong_penalty",
    "sequence_log_ratio",
    "truncated_rows",
    "DPO_LOSS_TYPES",
    "PolicyLossStats",
    "ValueLossStats",
    "bradley_terry_loss",
    "dpo_loss",
    "entropy_from_logits",
    "kl_penalized_rewards",
    "ppo_policy_loss",
    "value_loss",
]
