"""Where the reference model lives, from the config alone (the driver and the policy's actors both ask).

Three places: its own group (`ReferenceActor`, the default); the policy itself with its adapters
disabled (a PEFT method with `model.lora.fold_reference`: no copy at all); or a frozen copy inside
every policy replica (`ray.reference_in_policy`: no group, no process of its own). In the last two the
policy group answers `forward_reference`.
"""
from __future__ import annotations

from rlhf.config import Config
from rlhf.modes.spec import SPECS


def has_reference(cfg: Config) -> bool:
    """Whether the mode keeps a reference model: PPO always; DPO and RLAIF unless their loss needs none
    (SimPO); SFT, reward-model training and distillation never."""
    name = cfg.algorithm.name
    return "reference" in SPECS[name].frozen and (name == "ppo" or cfg.algorithm.dpo.uses_reference)


def reference_is_folded(cfg: Config) -> bool:
    """With a PEFT method and `model.lora.fold_reference`, the reference is the policy with its adapters
    disabled: no reference group."""
    return has_reference(cfg) and cfg.model.peft_method is not None and cfg.model.lora.fold_reference


def reference_copy_in_policy(cfg: Config) -> bool:
    """`ray.reference_in_policy` where folding does not already make the policy its own reference: every
    policy replica loads a frozen copy of the reference model."""
    return has_reference(cfg) and cfg.ray.reference_in_policy and not reference_is_folded(cfg)


def reference_served_by_policy(cfg: Config) -> bool:
    """The policy group answers `forward_reference` (folded, or holding a copy): no reference group starts."""
    return reference_is_folded(cfg) or reference_copy_in_policy(cfg)


def mix_anchored_to_reference(cfg: Config) -> bool:
    """The pre-training mix is anchored to the reference (`algorithm.ptx_target: reference`): the policy's
    process keeps its reference for as long as it trains (DPO does not drop its copy after precomputing)."""
    return cfg.algorithm.ptx_coef > 0 and cfg.algorithm.ptx_target == "reference"
