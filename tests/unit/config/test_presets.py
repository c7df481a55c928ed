"""The policy-gradient presets load, validate, and set the keys their papers are known by."""
import os

import pytest

from rlhf.config import load

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")

EXPECTED = {
    "grpo_tiny.yaml": {"advantage": "grpo", "loss_agg": "seq_mean_token_mean", "kl.placement": "loss",
                       "kl.estimator": "k3"},
    "dapo_tiny.yaml": {"advantage": "grpo", "clip_eps_high": 0.28, "dynamic_sampling": True, "loss_agg": "token_mean",
                       "overlong.buffer": 4, "kl.init_coef": 0.0},
    "dr_grpo_tiny.yaml": {"advantage": "grpo", "grpo_scale_by_std": False, "loss_agg": "seq_mean_token_sum_norm"},
    "gspo_tiny.yaml": {"advantage": "grpo", "ratio_level": "sequence", "loss_agg": "seq_mean_token_mean"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_loads_validates_and_sets_its_keys(name):
    cfg = load(os.path.join(CONFIGS, name), [])
    cfg.validate()
    for key, value in EXPECTED[name].items():
        node = cfg.algorithm
        for part in key.split("."):
            node = getattr(node, part)
        assert node == value, (name, key)
    assert not cfg.algorithm.uses_critic
