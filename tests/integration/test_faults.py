"""Non-finite numbers on real actors: NaN/inf rewards through a whole PPO run, and NaN gradients
inside a DeepSpeed trainer replica. Nothing non-finite may reach the weights (RELIABILITY 4, 5)."""
from __future__ import annotations

import math
import os

import pytest
import ray
import torch
from safetensors.torch import load_file

from rlhf.config import load
from rlhf.faults import TooManyBadSteps
from rlhf.metrics import read_metrics
from rlhf.records import Experience
from rlhf.train import run_training

pytestmark = pytest.mark.slow

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "ppo_tiny.yaml")


def small_config(assets, output_dir, *extra):
    return load(CONFIG, [
        f"model.path={assets.policy}",
        f"data.train_path={assets.data / 'task_train.jsonl'}",
        f"trainer.output_dir={output_dir}",
        "trainer.prompts_per_step=4", "rollout.samples_per_prompt=4", "rollout.max_new_tokens=8",
        "trainer.mini_batch_size=16", "trainer.micro_batch_size=8", "algorithm.ppo_epochs=1",
        "ray.policy.replicas=1", "ray.rollout.num_cpus=1", "logging.progress=false",
        "ray.reference_in_policy=true",  # one process fewer; the four-group layout is test_ppo's
        *extra,
    ])


def _policy_weights(checkpoint_dir: str) -> dict[str, torch.Tensor]:
    engine = os.path.join(checkpoint_dir, "policy", "engine")
    (name,) = [n for n in os.listdir(engine) if n.endswith(".safetensors")]
    return load_file(os.path.join(engine, name))


def test_nan_rewards_are_masked_skipped_counted_and_stop_the_run(tiny_assets, ray_session, tmp_path):
    # Calls 2, 5, 6 of the reward are all NaN, call 3 half NaN/inf (tests/integration/fault_rewards.py).
    cfg = small_config(tiny_assets, tmp_path, "trainer.steps=8", "trainer.save_steps=1",
                       "trainer.max_bad_steps=2", "trainer.keep_checkpoints=3", "trainer.save_hf_model=false",
                       "reward.function=tests.integration.fault_rewards:flaky_letter_reward")
    with pytest.raises(TooManyBadSteps) as err:
        run_training(cfg)
    last_good = os.path.join(str(tmp_path), "checkpoints", "step_5")
    assert "step 6: 2 steps in a row" in str(err.value) and "max_bad_steps=2" in str(err.value)
    assert last_good in str(err.value)

    rows = {r["step"]: r for r in read_metrics(str(tmp_path))}
    assert sorted(rows) == [1, 2, 3, 4, 5]
    batch = 16
    # A whole NaN batch: no update, counted.
    assert rows[2]["reward/invalid"] == batch and rows[2]["train/skipped_update"] == 1
    assert rows[2]["train/nonfinite_skipped"] == 1 and rows[2]["reward/mean"] is None
    # Half the samples bad: they are left out (zero advantage), the others train.
    assert rows[3]["reward/invalid"] == batch // 2 and rows[3]["train/skipped_update"] == 0
    assert rows[3]["train/nonfinite_skipped"] == 0 and math.isfinite(rows[3]["reward/mean"])
    assert rows[5]["train/nonfinite_steps_total"] == 2
    assert all(math.isfinite(r["kl/coef"]) for r in rows.values())
    # The weights after the skipped step 5 are those of step 4, and finite.
    before, after = _policy_weights(os.path.join(str(tmp_path), "checkpoints", "step_4")), _policy_weights(last_good)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
        assert torch.isfinite(after[name]).all(), name


@pytest.mark.parametrize("zero_stage", [2, 0])
def test_nonfinite_gradients_skip_the_optimizer_step(tiny_assets, ray_session, tmp_path, zero_stage):
    from actors.trainer import TrainingActor

    cfg = small_config(tiny_assets, tmp_path, f"trainer.zero_stage={zero_stage}")
    trainer = TrainingActor.options(num_cpus=1).remote("policy", cfg, 0, 1)
    try:
        addr, port = ray.get(trainer.master_address.remote())
        ray.get(trainer.setup.remote(addr, port))
        generator = torch.Generator().manual_seed(0)
        batch, prompt_len, length = 16, 6, 12
        sequences = torch.randint(3, 200, (batch, length), generator=generator)
        ones = torch.ones(batch, length - prompt_len)
        advantages = torch.randn(batch, length - prompt_len, generator=generator)
        good = Experience(sequences, torch.ones_like(sequences), ones, -3 * ones, advantages,
                          torch.zeros_like(ones), None, prompt_len)
        poisoned = Experience(sequences, torch.ones_like(sequences), ones, -3 * ones,
                              advantages.masked_fill(advantages > 1.0, math.inf), torch.zeros_like(ones), None,
                              prompt_len)
        start = ray.get(trainer.weights_blob.remote())
        stats = ray.get(trainer.train.remote([poisoned]))
        assert stats.values["policy/skipped_optimizer_steps"] == 1.0
        assert ray.get(trainer.weights_blob.remote()) == start  # byte-identical weights
        stats = ray.get(trainer.train.remote([good]))
        assert stats.values["policy/skipped_optimizer_steps"] == 0.0
        assert ray.get(trainer.weights_blob.remote()) != start
    finally:
        ray.kill(trainer)


def test_nonfinite_gradients_on_one_of_two_zero3_replicas_skip_the_step_on_both(tiny_assets, ray_session, tmp_path):
    """Only rank 0's batch is poisoned; ZeRO-3 shards every weight over both ranks, so a rank that stepped
    alone would leave the gathered model mixed. Both must skip, and both must step on the next good batch."""
    from actors.trainer import TrainingActor

    cfg = small_config(tiny_assets, tmp_path, "trainer.zero_stage=3", "ray.policy.replicas=2")
    trainers = [TrainingActor.options(num_cpus=1).remote("policy", cfg, rank, 2) for rank in range(2)]
    try:
        addr, port = ray.get(trainers[0].master_address.remote())
        ray.get([t.setup.remote(addr, port) for t in trainers])
        generator = torch.Generator().manual_seed(0)
        batch, prompt_len, length = 8, 6, 12
        sequences = torch.randint(3, 200, (batch, length), generator=generator)
        ones = torch.ones(batch, length - prompt_len)
        advantages = torch.randn(batch, length - prompt_len, generator=generator)

        def experience(adv):
            return Experience(sequences, torch.ones_like(sequences), ones, -3 * ones, adv, torch.zeros_like(ones),
                              None, prompt_len)

        def gathered():
            return ray.get([t.weights_blob.remote() for t in trainers])[0]  # every rank gathers; rank 0 returns

        start = gathered()
        poisoned = experience(advantages.masked_fill(advantages > 1.0, math.inf))
        stats = ray.get([trainers[0].train.remote([poisoned]), trainers[1].train.remote([experience(advantages)])])
        assert [s.values["policy/skipped_optimizer_steps"] for s in stats] == [1.0, 1.0]
        assert gathered() == start  # no shard moved on either rank
        stats = ray.get([t.train.remote([experience(advantages)]) for t in trainers])
        assert [s.values["policy/skipped_optimizer_steps"] for s in stats] == [0.0, 0.0]
        assert gathered() != start
    finally:
        for trainer in trainers:
            ray.kill(trainer)
