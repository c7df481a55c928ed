"""One benchmark row's settings, and how each side reads them.

`BenchSettings` is the single source of what both sides run: the TRL scripts get it as JSON
(`to_json`), our side as `rlhf train` config keys (`ours_config`). Every knob that exists on
both sides is set from here; where the two frameworks differ in kind (KL as a reward penalty
or as a loss term, one optimizer or two), bench/README.md says so.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

ALGOS = ("grpo", "ppo", "dpo")
SIZES = ("tiny", "small")
PRECISIONS = ("fp32", "bf16")

# Per (algo, size): the batch shape. PPO runs one sample per prompt (TRL's PPO has no group sampling);
# every row uses one mini-batch per step (TRL's PPO steps once per epoch whatever its mini-batch count).
SHAPES = {
    ("grpo", "tiny"): dict(prompts_per_step=8, samples_per_prompt=8, max_new_tokens=16, micro_batch_size=16,
                           ppo_epochs=1, learning_rate=3e-3),
    ("grpo", "small"): dict(prompts_per_step=4, samples_per_prompt=4, max_new_tokens=128, micro_batch_size=8,
                            ppo_epochs=1, learning_rate=5e-4),
    ("ppo", "tiny"): dict(prompts_per_step=64, samples_per_prompt=1, max_new_tokens=16, micro_batch_size=16,
                          ppo_epochs=2, learning_rate=3e-3),
    ("ppo", "small"): dict(prompts_per_step=16, samples_per_prompt=1, max_new_tokens=128, micro_batch_size=8,
                           ppo_epochs=1, learning_rate=5e-4),
    # DPO: prompts_per_step counts preference pairs per optimizer step.
    ("dpo", "tiny"): dict(prompts_per_step=32, samples_per_prompt=1, max_new_tokens=16, micro_batch_size=16,
                          ppo_epochs=1, learning_rate=1e-3),
    ("dpo", "small"): dict(prompts_per_step=16, samples_per_prompt=1, max_new_tokens=128, micro_batch_size=8,
                           ppo_epochs=1, learning_rate=5e-5),
}


@dataclass
class BenchSettings:
    algo: str
    size: str
    precision: str
    steps: int
    model_path: str
    prompts_path: str
    work_dir: str
    prompts_per_step: int
    samples_per_prompt: int
    max_new_tokens: int
    micro_batch_size: int
    ppo_epochs: int
    learning_rate: float
    mini_batch_size: int = 0  # 0: the whole rollout batch
    temperature: float = 1.0
    kl_coef: float = 0.01
    clip_eps: float = 0.2
    gamma: float = 1.0
    gae_lambda: float = 0.95
    dpo_beta: float = 0.1
    seed: int = 0
    trl_compile: str = "off"
    """TRL's side: `off`, `blocks` (its models' blocks compiled as our `trainer.compile` does) or `trainer`
    (TrainingArguments' `torch_compile`)."""

    def __post_init__(self) -> None:
        if not self.mini_batch_size:
            self.mini_batch_size = self.prompts_per_step * self.samples_per_prompt

    @property
    def samples_per_step(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def make_settings(algo: str, size: str, precision: str, steps: int, assets_root: str, work_dir: str) -> BenchSettings:
    data = "prefs_train.jsonl" if algo == "dpo" else "task_train.jsonl"
    return BenchSettings(algo=algo, size=size, precision=precision, steps=steps,
                         model_path=os.path.join(assets_root, "policy"),
                         prompts_path=os.path.join(assets_root, "data", data), work_dir=work_dir,
                         **SHAPES[(algo, size)])


def ours_config(s: BenchSettings, output_dir: str, cpus: int) -> dict:
    """The `rlhf train` config tree of the same run: one replica per group, each with every core
    (phases mostly run one after another), the built-in engine as TRL's generation is HF generate.
    PPO's policy and critic train at the same time, so they split the cores as in configs/ppo_tiny.yaml
    (bench/README.md, "The 50M rows in bf16": their update took 4.0 s a step either way over three
    repeats; one after the other was slower)."""
    group = {"replicas": 1, "num_cpus": cpus}
    tree = {
        "model": {"path": s.model_path, "dtype": {"fp32": "float32", "bf16": "bfloat16"}[s.precision]},
        "data": {"train_path": s.prompts_path, "max_prompt_tokens": 64},
        "rollout": {"engine": "builtin", "samples_per_prompt": s.samples_per_prompt,
                    "max_new_tokens": s.max_new_tokens, "temperature": s.temperature},
        "reward": {"source": "function", "function": "rlhf.tasks:letter_reward"},
        "trainer": {"steps": s.steps, "prompts_per_step": s.prompts_per_step, "mini_batch_size": s.mini_batch_size,
                    "micro_batch_size": s.micro_batch_size, "learning_rate": s.learning_rate,
                    "critic_learning_rate": s.learning_rate, "zero_stage": 2, "seed": s.seed,
                    "output_dir": output_dir, "save_steps": 0, "save_hf_model": False},
        "ray": {name: dict(group) for name in ("policy", "critic", "reference", "reward", "rollout")},
        "logging": {"progress": False, "sample_completions": 0, "wandb": {"enabled": False}},
    }
    kl = {"controller": "fixed", "init_coef": s.kl_coef, "estimator": "k1"}
    if s.algo == "grpo":
        tree["algorithm"] = {"advantage": "grpo", "clip_eps": s.clip_eps, "ppo_epochs": s.ppo_epochs, "kl": kl}
    elif s.algo == "ppo":
        for trained in ("policy", "critic"):
            tree["ray"][trained]["num_cpus"] = max(1, cpus // 2)
        tree["algorithm"] = {"advantage": "gae", "gamma": s.gamma, "gae_lambda": s.gae_lambda,
                             "clip_eps": s.clip_eps, "value_clip_eps": s.clip_eps, "ppo_epochs": s.ppo_epochs,
                             "whiten_advantages": True, "kl": kl}
    else:
        tree["algorithm"] = {"name": "dpo", "dpo": {"loss_type": "sigmoid", "beta": s.dpo_beta}}
        tree["data"] = {"train_path": s.prompts_path, "max_prompt_tokens": 64, "max_response_tokens": s.max_new_tokens}
        for name in ("critic", "reward", "rollout"):
            tree["ray"].pop(name)
    return tree
