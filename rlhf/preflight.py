"""Checks the driver runs before any actor starts, each error naming the config key.

Everything that can fail on the driver fails here, in seconds, instead of minutes later inside an
actor: paths that do not exist, reward functions that do not import, a judge rubric that does not
load, PEFT target modules the model lacks, an output folder that cannot be written or that holds
another run. Nothing is written before these pass.
"""
from __future__ import annotations

import os

from rlhf.config import Config, ConfigError
from rlhf.modes.spec import SPECS

RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "data_report.json")
"""What marks a folder as holding a run."""


def _model_folder(path: str, key: str) -> None:
    if not os.path.isdir(path):
        raise ConfigError(f"{key}: {path!r} does not exist (a Hugging Face model folder)")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(f"{key}: {path!r} has no config.json (not a Hugging Face model folder)")


def check_paths(cfg: Config, pending: frozenset[str] = frozenset()) -> None:
    """Model folders and data files named by the config exist, except under the `pending` keys: paths
    an earlier pipeline stage will write (`rlhf pipeline` checks every stage before the first runs)."""
    spec, model = SPECS[cfg.algorithm.name], cfg.model
    for key, path in (("model.path", model.path), ("model.reference_path", model.reference_path),
                      ("model.teacher_path", model.teacher_path),
                      ("model.reward_path", model.reward_path if (spec.scores and "model" in cfg.reward.sources)
                       or cfg.algorithm.name == "rm" else None),
                      ("reward.judge.model_path", cfg.reward.judge.model_path
                       if spec.scores and "judge" in cfg.reward.sources and cfg.reward.judge.backend == "local"
                       else None)):
        if path and key not in pending:
            _model_folder(path, key)
    for key in ("train_path", "eval_path", "ptx_path"):
        path = getattr(cfg.data, key)
        if path and f"data.{key}" not in pending and not os.path.isfile(path):
            raise ConfigError(f"data.{key}: {path!r} is not a file")
    if cfg.data.ptx_path and "data.ptx_path" not in pending:
        from rlhf.data.pretrain_mix import read_ptx_lines
        from rlhf.data.reader import DataError

        try:
            read_ptx_lines(cfg.data.ptx_path)
        except (DataError, UnicodeDecodeError) as err:
            raise ConfigError(f"data.ptx_path: {err}") from None


def check_reward_sources(cfg: Config) -> None:
    """Reward functions import and are callable; the judge's rubric loads."""
    from rlhf.rewards.function import import_function

    spec = SPECS[cfg.algorithm.name]
    uses_function = (spec.scores and "function" in cfg.reward.sources) or cfg.algorithm.name == "distill"
    if uses_function:
        try:
            import_function(cfg.reward.function)
        except ValueError as err:
            raise ConfigError(f"{err}. The module must be importable from the driver and every actor: install it, "
                              "or put its folder on PYTHONPATH (the working directory is searched too)") from None
    if cfg.eval.task_reward:
        try:
            import_function(cfg.eval.task_reward, "eval.task_reward")
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if spec.scores and "judge" in cfg.reward.sources:
        from rlhf.rewards.rubric import load_rubric

        try:
            load_rubric(cfg.reward.judge.rubric_path)
        except ValueError as err:
            raise ConfigError(f"reward.judge.rubric_path: {err}") from None


def check_peft_targets(cfg: Config) -> None:
    """Every named LoRA target module exists in the model (built on the meta device: no weights read)."""
    model_cfg = cfg.model
    if model_cfg.peft_method != "lora":
        return
    from transformers import AutoConfig, AutoModelForCausalLM
    import torch

    from rlhf.models.adapters import ALL_LINEAR, expand_target_modules

    config = AutoConfig.from_pretrained(model_cfg.path, trust_remote_code=model_cfg.trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=model_cfg.trust_remote_code)
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    targets = expand_target_modules(model_cfg.lora.target_modules, model)
    missing = [] if targets == ALL_LINEAR else [t for t in targets if t not in leaves]
    if missing:
        raise ConfigError(f"model.lora.target_modules: {missing} not found in {model_cfg.path} (its modules include "
                          f"{sorted(leaves)[:20]}); use module names from the model, or all-linear")


def check_output_dir(cfg: Config, resume: bool) -> None:
    """The output folder can be created and written, and holds no other run unless resuming or
    `trainer.overwrite`. Writes nothing."""
    out = os.path.abspath(cfg.trainer.output_dir)
    existing = [name for name in RUN_FILES if os.path.exists(os.path.join(out, name))]
    if existing and not (resume or cfg.trainer.resume == "auto" or cfg.trainer.overwrite):
        raise ConfigError(f"trainer.output_dir: {out!r} already holds a run ({', '.join(existing)}); resume it with "
                          "--resume, choose another folder, or set trainer.overwrite=true to write over it")
    ancestor = out
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ConfigError(f"trainer.output_dir: cannot create {out!r}: {ancestor!r} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"trainer.output_dir: {out!r} is not writable (no write permission on {ancestor!r})")


def check_before_start(cfg: Config, resume: bool) -> None:
    """Everything the driver can check before reading data or starting Ray."""
    check_output_dir(cfg, resume)
    check_paths(cfg)
    check_reward_sources(cfg)
    check_peft_targets(cfg)


def create_output_dir(cfg: Config) -> None:
    try:
        os.makedirs(cfg.trainer.output_dir, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"trainer.output_dir: cannot create {cfg.trainer.output_dir!r}: {err.strerror}") from None
