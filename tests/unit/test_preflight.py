"""Bad input fails on the driver before Ray starts (so before any actor), naming the config key, and
a failed start leaves an existing run folder byte-identical."""
from __future__ import annotations

import hashlib
import os

import pytest

from rlhf.config import ConfigError, load
from rlhf.train import run_training


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A random one-layer Llama (config and weights only: the checks read no tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = str(tmp_path_factory.mktemp("model"))
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(folder)
    return folder


@pytest.fixture
def train_file(tmp_path) -> str:
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "Write the letter b."}\n')
    return str(path)


def _folder_digest(folder) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def _fails_before_any_actor(cfg, match: str) -> None:
    """Raises the named ConfigError without reaching `init_ray`, the only way in to Ray and actors.

    The suite shares one Ray instance, so `ray.is_initialized()` says nothing here: the test
    watches the call instead (it still runs the real function when reached)."""
    import rlhf.train as train

    reached = []
    real_init_ray = train.init_ray

    def watched_init_ray(*args, **kwargs):
        reached.append(args)
        return real_init_ray(*args, **kwargs)

    train.init_ray = watched_init_ray
    try:
        with pytest.raises(ConfigError, match=match):
            run_training(cfg)
    finally:
        train.init_ray = real_init_ray
    assert reached == [], "the run reached Ray start-up before failing"


def test_unimportable_or_uncallable_reward_function_names_the_key_and_pythonpath(tiny_model, train_file, tmp_path):
    cfg = load(None, [f"model.path={tiny_model}", f"data.train_path={train_file}", f"trainer.output_dir={tmp_path}/o",
                      "reward.function=no_such_module_xyz:score"])
    _fails_before_any_actor(cfg, r"^reward.function: cannot import module 'no_such_module_xyz'.*PYTHONPATH")
    cfg = load(None, [f"model.path={tiny_model}", f"data.train_path={train_file}", f"trainer.output_dir={tmp_path}/o",
                      "reward.function=rlhf.tasks:NO_SUCH_FUNCTION"])
    _fails_before_any_actor(cfg, r"^reward.function: 'rlhf.tasks' has no callable 'NO_SUCH_FUNCTION'")
    assert not os.path.exists(tmp_path / "o")


def test_missing_paths_name_their_keys_and_leave_an_existing_run_byte_identical(tiny_model, train_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {path: earlier}\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    before = _folder_digest(run)
    base = [f"data.train_path={train_file}", f"trainer.output_dir={run}", "trainer.resume=auto"]
    _fails_before_any_actor(load(None, ["model.path=/no/such/model", *base]), r"^model.path: '/no/such/model' does not")
    _fails_before_any_actor(load(None, [f"model.path={tmp_path}", *base]), r"^model.path: .* has no config.json")
    _fails_before_any_actor(load(None, [f"model.path={tiny_model}", "data.train_path=/no/train.jsonl",
                                        f"trainer.output_dir={run}", "trainer.resume=auto"]),
                            r"^data.train_path: '/no/train.jsonl' is not a file")
    # Not resuming, not overwriting: an existing run is never written into.
    _fails_before_any_actor(load(None, [f"model.path={tiny_model}", f"data.train_path={train_file}",
                                        f"trainer.output_dir={run}"]),
                            r"^trainer.output_dir: .* already holds a run \(config.yaml, metrics.jsonl\).*overwrite")
    # The pre-training mix's text: missing, or with no line of text.
    mix = [f"model.path={tiny_model}", *base, "algorithm.name=sft", "algorithm.ptx_coef=1"]
    _fails_before_any_actor(load(None, [*mix, "data.ptx_path=/no/corpus.txt"]),
                            r"^data.ptx_path: '/no/corpus.txt' is not a file")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    _fails_before_any_actor(load(None, [*mix, f"data.ptx_path={blank}"]), r"^data.ptx_path: .*blank.txt: no text")
    assert _folder_digest(run) == before


def test_output_dir_that_cannot_be_created_names_the_key(tiny_model, train_file, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = load(None, [f"model.path={tiny_model}", f"data.train_path={train_file}",
                      f"trainer.output_dir={blocker}/run"])
    _fails_before_any_actor(cfg, r"^trainer.output_dir: cannot create .*a_file.* is a file")


def test_lora_target_modules_are_checked_against_the_model_with_all_linear_expanded(tiny_model, train_file,
                                                                                    tmp_path):
    from transformers import AutoModelForCausalLM

    from rlhf.models.adapters import expand_target_modules

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert expand_target_modules(["all-linear"], model) == "all-linear"
    assert expand_target_modules(["all-linear", "lm_head"], model) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"])
    base = [f"model.path={tiny_model}", f"data.train_path={train_file}", f"trainer.output_dir={tmp_path}/o",
            "model.lora.rank=4"]
    _fails_before_any_actor(load(None, [*base, 'model.lora.target_modules=["all-linear","lm_head","qkv"]']),
                            r"^model.lora.target_modules: \['qkv'\] not found in ")


def test_judge_rubric_that_does_not_load_names_the_key(tiny_model, train_file, tmp_path):
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text("template: 'no slots here'\nanswers: {a: 1}\n")
    cfg = load(None, [f"model.path={tiny_model}", f"data.train_path={train_file}", f"trainer.output_dir={tmp_path}/o",
                      "reward.source=judge", f"reward.judge.model_path={tiny_model}",
                      f"reward.judge.rubric_path={rubric}"])
    _fails_before_any_actor(cfg, r"^reward.judge.rubric_path: rubric .*the template has no \{prompt\} slot")


def test_unimportable_task_reward_names_its_key(tiny_model, train_file, tmp_path):
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text('{"prompt": "Write the letter k."}\n')
    cfg = load(None, [f"model.path={tiny_model}", f"data.train_path={train_file}", f"data.eval_path={eval_file}",
                      f"trainer.output_dir={tmp_path}/o", "eval.task_reward=no_such_module_xyz:score"])
    _fails_before_any_actor(cfg, r"^eval.task_reward: cannot import module 'no_such_module_xyz'")
    assert not os.path.exists(tmp_path / "o")
