"""The policy-gradient keys: defaults, and errors that name the key."""
import pytest

from rlhf.config import ConfigError, load

BASE = ["model.path=/m", "data.train_path=/d"]


def test_defaults_are_todays_ppo():
    a = load(None, BASE).algorithm
    assert (a.is_correction, a.loss_agg, a.clip_eps_high, a.ratio_level, a.kl.placement, a.dynamic_sampling,
            a.overlong.filter, a.overlong.penalty, a.grpo_scale_by_std) == (
        "none", "token_mean", None, "token", "reward", False, False, 0.0, True)


def test_rollout_dtype_auto_follows_the_model():
    assert load(None, BASE + ["model.dtype=bfloat16"]).rollout_dtype == "bfloat16"
    assert load(None, BASE + ["rollout.dtype=bfloat16"]).rollout_dtype == "bfloat16"
    assert load(None, BASE).rollout_dtype == "float32"


@pytest.mark.parametrize("overrides, key", [
    (["algorithm.is_correction=ois"], "algorithm.is_correction: must be one of"),
    (["algorithm.is_cap=0"], "algorithm.is_cap: must be > 0"),
    (["algorithm.loss_agg=seq_mean"], "algorithm.loss_agg: must be one of"),
    (["algorithm.clip_eps_high=-0.1"], "algorithm.clip_eps_high: must be > 0"),
    (["algorithm.ratio_level=group"], "algorithm.ratio_level: must be one of"),
    (["algorithm.kl.placement=both"], "algorithm.kl.placement: must be one of"),
    (["algorithm.max_resample_rounds=-1"], "algorithm.max_resample_rounds: must be >= 0"),
    (["rollout.dtype=fp8"], "rollout.dtype: must be one of"),
    (["algorithm.overlong.buffer=99"], "algorithm.overlong.buffer: must be <= rollout.max_new_tokens"),
    (["algorithm.overlong.penalty=1.0"], "algorithm.overlong.penalty: needs algorithm.overlong.buffer"),
    (["algorithm.dynamic_sampling=true", "rollout.samples_per_prompt=1", "trainer.prompts_per_step=32"],
     "algorithm.dynamic_sampling: needs rollout.samples_per_prompt >= 2"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load(None, BASE + overrides)
    assert str(err.value).startswith(key), str(err.value)
