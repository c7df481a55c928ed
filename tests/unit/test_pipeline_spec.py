"""The pipeline file: parsing, layering of a stage's config, references between stages and the checks
that run before any stage (rlhf/pipeline/spec.py, checks.py). Model folders here are stand-ins with a
config.json, which is all the preflight looks at."""
from __future__ import annotations

import json
import os

import pytest
import yaml

from rlhf.config import ConfigError
from rlhf.pipeline.checks import check_pipeline
from rlhf.pipeline.runner import stage_config
from rlhf.pipeline.spec import (deep_merge, parse_pipeline, plan_stage, resolve_references, split_cli_overrides,
                                starting_model)


@pytest.fixture
def files(tmp_path):
    """Stand-in model folders, data files and a run config an sft stage can start from."""
    for name in ("base", "reward"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    for name in ("sft.jsonl", "prefs.jsonl", "task.jsonl", "general.txt"):
        (tmp_path / name).write_text('{"prompt": "p"}\n')
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump({
        "model": {"path": str(tmp_path / "base")}, "data": {"train_path": str(tmp_path / "sft.jsonl")},
        "algorithm": {"name": "sft"}, "trainer": {"steps": 40, "output_dir": "outputs/elsewhere"}}))
    return tmp_path


def three_stages(files, **extra) -> dict:
    return {"output_dir": str(files / "out"), "stages": [
        {"name": "sft", "config": str(files / "sft.yaml"), "trainer": {"steps": 3},
         "eval.general_text_path": str(files / "general.txt"), "overrides": ["trainer.learning_rate=0.01"]},
        {"name": "rm", "algorithm.name": "rm", "model": {"path": str(files / "base"), "reward_path": str(files / "reward")},
         "data.train_path": str(files / "prefs.jsonl")},
        {"name": "ppo", "algorithm.name": "ppo", "model": {"path": "${sft.final}", "reward_path": "${ rm.final }"},
         "reward.source": "model", "data.train_path": str(files / "task.jsonl"),
         "eval.general_text_path": str(files / "general.txt")},
    ], **extra}


def test_a_stage_layers_its_config_file_inline_keys_overrides_and_cli_sets(files):
    pipeline = parse_pipeline(three_stages(files), "p.yaml")
    plan = plan_stage(pipeline, 0, ["trainer.steps=5"], "p.yaml")
    cfg = plan.cfg
    assert (cfg.algorithm.name, cfg.trainer.steps, cfg.trainer.learning_rate) == ("sft", 5, 0.01)
    assert cfg.trainer.output_dir == str(files / "out" / "sft")  # always the stage's folder
    assert cfg.eval.general_text_path == str(files / "general.txt") and plan.references == {}


def test_references_resolve_to_earlier_stages_final_folders(files):
    plans = check_pipeline(parse_pipeline(three_stages(files), "p.yaml"), {}, "p.yaml")
    ppo = plans[2]
    assert ppo.cfg.model.path == str(files / "out" / "sft" / "final")
    assert ppo.cfg.model.reward_path == str(files / "out" / "rm" / "final")
    assert ppo.references == {"model.path": "sft", "model.reward_path": "rm"}
    assert starting_model(parse_pipeline(three_stages(files), "p.yaml"), plans) == str(files / "base")


@pytest.mark.parametrize("value, message", [
    ("${sfx.final}", r"p.yaml: stage 'ppo': model.path: \$\{sfx.final\} names no stage \(stages: sft, rm, ppo\)"),
    ("${ppo.final}", r"stage 'ppo': model.path: \$\{ppo.final\}: stage 'ppo' is this stage"),
    ("${sft.best}", r"model.path: \$\{sft.best\}: unknown output 'best' \(known: final\)"),
    ("${sft}", r"model.path: '\$\{sft\}' is not a reference"),
])
def test_bad_references_fail_naming_the_file_stage_and_key(files, value, message):
    raw = three_stages(files)
    raw["stages"][2]["model"]["path"] = value
    with pytest.raises(ConfigError, match=message):
        check_pipeline(parse_pipeline(raw, "p.yaml"), {}, "p.yaml")


def test_a_forward_reference_fails(files):
    raw = three_stages(files)
    raw["stages"][0]["model.path"] = "${ppo.final}"
    with pytest.raises(ConfigError, match=r"stage 'sft': model.path: \$\{ppo.final\}: stage 'ppo' runs after this one"):
        check_pipeline(parse_pipeline(raw, "p.yaml"), {}, "p.yaml")


def test_references_inside_lists_and_longer_strings(files):
    pipeline = parse_pipeline(three_stages(files), "p.yaml")
    tree, refs = resolve_references({"a": ["x", "${sft.final}/tokenizer"]}, pipeline, 1)
    assert tree == {"a": ["x", os.path.join(str(files / "out" / "sft" / "final"), "tokenizer")]}
    assert refs == {"a[1]": "sft"}


def _adapter_sft(raw: dict, **lora) -> dict:
    raw["stages"][0]["model.lora"] = {"rank": 4, **lora}
    return raw


@pytest.fixture
def llama_base(files):
    """The base stand-in as a one-layer Llama config: the LoRA preflight builds it on the meta device."""
    (files / "base" / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 32}))
    return files


def test_a_stage_training_adapters_is_referred_to_by_its_merged_model(files, llama_base):
    raw = _adapter_sft(three_stages(files), save_merged=True)
    raw["stages"][2]["model"]["path"] = "${sft.final}/merged"
    ppo = check_pipeline(parse_pipeline(raw, "p.yaml"), {}, "p.yaml")[2]
    assert ppo.cfg.model.path == os.path.join(str(files / "out" / "sft" / "final"), "merged")


@pytest.mark.parametrize("edit, message", [
    (lambda r: _adapter_sft(r, save_merged=True),
     r"stage 'ppo': model.path: refers to sft's final model, but stage 'sft' trains lora adapters and its final/ "
     r"holds only them; refer to \$\{sft.final\}/merged"),
    (lambda r: _adapter_sft(r)["stages"][2]["model"].update({"path": "${sft.final}/merged"}),
     r"stage 'sft' trains lora adapters .*; set model.lora.save_merged: true in stage 'sft'"),
    (lambda r: r["stages"][0].update({"model.peft": {"type": "prompt_tuning"}}),
     r"stage 'sft' trains prompt_tuning virtual tokens, which no model folder holds"),
])
def test_a_reference_to_adapters_alone_fails_before_any_stage(files, llama_base, edit, message):
    raw = three_stages(files)
    edit(raw)
    with pytest.raises(ConfigError, match=message):
        check_pipeline(parse_pipeline(raw, "p.yaml"), {}, "p.yaml")


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["stages"][1].update({"trainer.stepz": 3}), r"stage 'rm': trainer.stepz: unknown key"),
    (lambda r: r["stages"][1].update({"data.train_path": "/nope.jsonl"}),
     r"stage 'rm': data.train_path: '/nope.jsonl' is not a file"),
    (lambda r: r["stages"][2].update({"eval.general_text_path": None, "eval.general_prompts_path":
                                      r["stages"][2]["eval.general_text_path"]}),
     r"stage 'ppo': eval.general_text_path: None differs from stage 'sft'"),
    (lambda r: r["stages"][1].update({"name": "sft"}), r"stages\[1\].name: 'sft' is used by an earlier stage"),
    (lambda r: r.update({"outputdir": "x"}), r"p.yaml: outputdir: unknown key \(known here: base_model, output_dir, stages\)"),
    (lambda r: r["stages"][0].update({"trainer.save_hf_model": False}),
     r"stage 'ppo': model.path: refers to sft's final model, but stage 'sft' has trainer.save_hf_model=false"),
    (lambda r: r.update({"base_model": "/no/model"}), r"base_model: '/no/model' is not a Hugging Face model folder"),
    (lambda r: r["stages"][0].update({"name": "s f t"}), r"stages\[0\].name: 's f t' may only hold"),
])
def test_config_errors_fail_before_any_stage_naming_the_file_and_key(files, edit, message):
    raw = three_stages(files)
    edit(raw)
    with pytest.raises(ConfigError, match=message):
        check_pipeline(parse_pipeline(raw, "p.yaml"), {}, "p.yaml")


def test_pending_paths_from_references_skip_only_their_own_existence_check(files):
    raw = three_stages(files)
    raw["stages"][2]["model"]["reference_path"] = "/missing/reference"  # not a reference: still checked
    with pytest.raises(ConfigError, match=r"stage 'ppo': model.reference_path: '/missing/reference' does not exist"):
        check_pipeline(parse_pipeline(raw, "p.yaml"), {}, "p.yaml")


def test_cli_overrides_are_split_by_stage_and_an_unknown_stage_fails():
    assert split_cli_overrides(["sft.trainer.steps=3", "rm.a.b=x=y"], ["sft", "rm"]) == {
        "sft": ["trainer.steps=3"], "rm": ["a.b=x=y"]}
    with pytest.raises(ConfigError, match=r"--set 'dpo.trainer.steps=3': no stage named 'dpo' \(stages: sft, rm\)"):
        split_cli_overrides(["dpo.trainer.steps=3"], ["sft", "rm"])
    with pytest.raises(ConfigError, match="expected STAGE.key.sub=value"):
        split_cli_overrides(["steps=3"], ["sft"])


def test_deep_merge_merges_sections_and_places_dotted_keys():
    tree = {"model": {"path": "a", "dtype": "float32"}, "trainer": {"steps": 4}}
    deep_merge(tree, {"model": {"path": "b"}, "trainer.steps": 2, "eval.every_steps": 1})
    assert tree == {"model": {"path": "b", "dtype": "float32"}, "trainer": {"steps": 2}, "eval": {"every_steps": 1}}


def test_stage_config_adds_the_baseline_to_probed_stages_and_one_wandb_group(files):
    raw = three_stages(files)
    raw["stages"][1]["logging.wandb"] = {"enabled": True}
    plans = check_pipeline(parse_pipeline(raw, "p.yaml"), {}, "p.yaml")
    baseline = {"perplexity": 52.0, "accuracy": 0.25}
    assert stage_config(plans[2], baseline, "grp").eval.general_baseline == baseline
    rm = stage_config(plans[1], baseline, "grp")  # no probe: no baseline; W&B on: the pipeline's group
    assert rm.eval.general_baseline == {} and (rm.logging.wandb.group, rm.logging.wandb.run_name) == ("grp", "rm")
    assert plans[2].cfg.eval.general_baseline == {}  # the checked plan itself is left as it was


def test_the_pipeline_file_round_trips_through_yaml(files):
    path = files / "p.yaml"
    path.write_text(yaml.safe_dump(three_stages(files)))
    from rlhf.config import read_yaml

    pipeline = parse_pipeline(read_yaml(path), str(path))
    assert pipeline.names == ["sft", "rm", "ppo"] and pipeline.stages[0].overrides == ["trainer.learning_rate=0.01"]
    assert json.loads(json.dumps(pipeline.stages[2].settings))["reward.source"] == "model"


def test_the_command_fails_with_exit_code_2_before_any_stage(files, capsys):
    from rlhf.cli import main

    raw = three_stages(files)
    raw["stages"][2]["model"]["path"] = "${dpo.final}"
    path = files / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["pipeline", str(path)]) == 2
    assert f"config error: {path}: stage 'ppo': model.path: ${{dpo.final}} names no stage" in capsys.readouterr().err
    assert not (files / "out").exists()  # nothing written


def test_a_folder_holding_a_pipeline_needs_resume(files):
    from rlhf.pipeline.runner import run_pipeline

    path = files / "p.yaml"
    path.write_text(yaml.safe_dump(three_stages(files)))
    (files / "out" / "sft").mkdir(parents=True)
    (files / "out" / "sft" / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"output_dir: .* already holds stages of a pipeline \(sft\); continue it "
                                          "with --resume"):
        run_pipeline(str(path))


def test_a_signal_between_stages_is_recorded_and_the_handlers_come_back():
    import signal

    from rlhf.pipeline.runner import stop_between_stages

    before = signal.getsignal(signal.SIGTERM)
    with stop_between_stages() as received:
        signal.raise_signal(signal.SIGTERM)  # would end the test process without the pipeline's handler
        assert received == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is before  # a second one acts as before the pipeline
    assert signal.getsignal(signal.SIGTERM) is before
