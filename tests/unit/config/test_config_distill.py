"""The distill mode's keys: defaults, the switch to offline, and bad values naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.config import ConfigError, load

DISTILL = ["model.path=/m", "data.train_path=/d.jsonl", "algorithm.name=distill", "model.teacher_path=/t"]


def test_shipped_config_is_on_policy_and_switches_to_offline_by_one_key():
    path = Path(__file__).parents[3] / "configs" / "distill_tiny.yaml"
    cfg = load(path)
    assert cfg.algorithm.name == "distill" and cfg.model.teacher_path and cfg.data.eval_path
    assert cfg.algorithm.distill.mode == "on_policy" and cfg.algorithm.distill.divergence == "jsd"
    assert load(path, ["algorithm.distill.mode=offline"]).algorithm.distill.mode == "offline"


def test_defaults():
    d = load(None, DISTILL).algorithm.distill
    assert (d.mode, d.divergence, d.jsd_beta, d.temperature) == ("on_policy", "jsd", 0.5, 1.0)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["algorithm.distill.mode=online"], "algorithm.distill.mode: must be one of on_policy, offline"),
        (["algorithm.distill.divergence=tvd"], "algorithm.distill.divergence: must be one of forward_kl, reverse_kl, jsd"),
        (["algorithm.distill.jsd_beta=0"], "algorithm.distill.jsd_beta: must be in (0, 1)"),
        (["algorithm.distill.jsd_beta=1.0"], "algorithm.distill.jsd_beta: must be in (0, 1)"),
        (["algorithm.distill.temperature=0"], "algorithm.distill.temperature: must be > 0"),
        (["algorithm.distill.tempreature=2"], "algorithm.distill.tempreature: unknown key"),
        (["ray.teacher.replicas=0"], "ray.teacher.replicas: must be >= 1"),
        (["model.teacher_path=null"], "model.teacher_path: is required for algorithm.name=distill"),
        # On-policy: the student's samples (prompts_per_step * samples_per_prompt = 8 * 4) split into mini-batches.
        (["trainer.mini_batch_size=24", "trainer.micro_batch_size=8"],
         "trainer.mini_batch_size: must divide the on-policy batch"),
        (["ray.policy.replicas=3"], "trainer.micro_batch_size: mini_batch_size (16) must be"),
        (["rollout.tensor_parallel_size=2"], "rollout.tensor_parallel_size: > 1 needs rollout.engine=vllm"),
    ],
)
def test_bad_distill_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load(None, DISTILL + overrides)
    assert str(err.value).startswith(key), str(err.value)


def test_offline_does_not_need_an_on_policy_batch_shape():
    cfg = load(None, DISTILL + ["algorithm.distill.mode=offline", "trainer.mini_batch_size=24",
                                "trainer.micro_batch_size=8"])
    assert cfg.trainer.mini_batch_size == 24


def test_episodes_are_on_policy_distillation_only():
    env = ["rollout.env=rlhf.envs.tools:ToolEnv", "rollout.env_kwargs={tools: [calc]}"]
    cfg = load(None, DISTILL + env)
    assert cfg.rollout.env == "rlhf.envs.tools:ToolEnv" and cfg.rollout.env_kwargs == {"tools": ["calc"]}
    with pytest.raises(ConfigError, match="^rollout.env: .*on-policy distillation; algorithm.name is 'distill' "
                                          "with algorithm.distill.mode 'offline'"):
        load(None, DISTILL + env + ["algorithm.distill.mode=offline"])
    with pytest.raises(ConfigError, match="^rollout.env: .*algorithm.name is 'dpo'$"):
        load(None, ["model.path=/m", "data.train_path=/d.jsonl", "algorithm.name=dpo"] + env)
