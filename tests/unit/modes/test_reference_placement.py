"""Where the reference lives, per mode and config: its own group, folded into a PEFT policy, or copied into
every policy replica (`ray.reference_in_policy`)."""
from __future__ import annotations

import pytest

from rlhf.config import load
from rlhf.modes.reference import reference_copy_in_policy, reference_is_folded, reference_served_by_policy

BASE = ["model.path=/m", "data.train_path=/d.jsonl"]


@pytest.mark.parametrize("overrides, folded, copied", [
    (["algorithm.name=ppo"], False, False),
    (["algorithm.name=ppo", "ray.reference_in_policy=true"], False, True),
    # Folding wins: the policy without adapters is the reference, nothing to copy.
    (["algorithm.name=ppo", "ray.reference_in_policy=true", "model.lora.rank=8"], True, False),
    (["algorithm.name=ppo", "ray.reference_in_policy=true", "model.lora.rank=8", "model.lora.fold_reference=false"],
     False, True),
    (["algorithm.name=dpo", "ray.reference_in_policy=true"], False, True),
    (["algorithm.name=rlaif", "ray.reference_in_policy=true"], False, True),
    # A loss without a reference, and modes that have none: no copy either.
    (["algorithm.name=dpo", "ray.reference_in_policy=true", "algorithm.dpo.loss_type=simpo"], False, False),
    (["algorithm.name=sft", "ray.reference_in_policy=true"], False, False),
    (["algorithm.name=distill", "ray.reference_in_policy=true", "model.teacher_path=/t"], False, False),
    # Modes without a reference fold none, even with an adapter (the summary reported one folded).
    (["algorithm.name=sft", "model.lora.rank=8"], False, False),
    (["algorithm.name=distill", "model.teacher_path=/t", "model.lora.rank=8"], False, False),
    (["algorithm.name=dpo", "model.lora.rank=8", "algorithm.dpo.loss_type=simpo"], False, False),
    (["algorithm.name=dpo", "model.lora.rank=8"], True, False),
])
def test_reference_place(overrides, folded, copied):
    cfg = load(None, BASE + overrides)
    assert (reference_is_folded(cfg), reference_copy_in_policy(cfg)) == (folded, copied)
    assert reference_served_by_policy(cfg) == (folded or copied)

