"""Training losses: PPO (policy, value, entropy, shaped rewards), DPO family, reward model."""

from rlhf.losses.dpo import DPO_LOSS_TYPES, dpo_loss
from rlhf.losses.ppo import (
    PolicyLossStats,
    ValueLossStats,
    entropy_from_logits,
    kl_penalized_rewards,
    ppo_policy_loss,
    value_loss,
)
from rlhf.losses.reward_model import bradley_terry_loss

__all__ = [
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
