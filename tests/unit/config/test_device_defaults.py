"""Device-dependent defaults: CPU values unchanged, GPU values from the configured resources, user values kept."""
from __future__ import annotations

from rlhf.config import load
from rlhf.config.device_defaults import device_defaults
from rlhf.training.deepspeed_model import deepspeed_config

BASE = ["model.path=/m", "data.train_path=/d.jsonl"]


def test_cpu_run_keeps_the_cpu_values():
    cfg = load(None, BASE)
    assert cfg.rollout.gpu_memory_utilization == 0.15
    assert cfg.rollout.enforce_eager is True
    assert cfg.rollout.engine_core_in_process is True
    assert cfg.ray.collective_timeout_s == 60.0
    assert cfg.trainer.zero_init is False


def test_gpu_run_gets_gpu_values():
    cfg = load(None, BASE + ["ray.policy.num_gpus=1", "ray.rollout.num_gpus=1", "trainer.zero_stage=3"])
    assert cfg.rollout.gpu_memory_utilization == 0.85
    assert cfg.rollout.enforce_eager is False
    assert cfg.rollout.engine_core_in_process is False
    assert cfg.ray.collective_timeout_s == 1800.0
    assert cfg.trainer.zero_init is True
    colocated = load(None, BASE + ["ray.policy.num_gpus=0.5", "ray.rollout.num_gpus=0.5", "ray.colocate=true"])
    assert colocated.rollout.gpu_memory_utilization == 0.4
    assert colocated.trainer.zero_init is False  # ZeRO-2


def test_user_values_win_and_defaults_are_pure():
    cfg = load(None, BASE + ["ray.rollout.num_gpus=1", "rollout.gpu_memory_utilization=0.5", "rollout.enforce_eager=true",
                      "ray.collective_timeout_s=30"])
    assert (cfg.rollout.gpu_memory_utilization, cfg.rollout.enforce_eager, cfg.ray.collective_timeout_s) == \
        (0.5, True, 30.0)
    assert device_defaults(cfg)["rollout.gpu_memory_utilization"] == 0.85


def test_deepspeed_config_offload_and_adam_choice():
    common = dict(zero_stage=3, micro_batch_size=2, grad_accum_steps=1, world_size=1, learning_rate=1e-3,
                  weight_decay=0.0, max_grad_norm=1.0, dtype="bfloat16")
    cpu = deepspeed_config(**common)
    assert cpu["optimizer"]["params"]["torch_adam"] is True
    assert cpu["zero_optimization"] == {"stage": 3}
    offloaded = deepspeed_config(**common, on_gpu=True, offload_optimizer=True, offload_params=True)
    assert offloaded["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert offloaded["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert offloaded["optimizer"]["params"]["torch_adam"] is True  # offloaded states: no fused CUDA Adam
