"""The pipeline file: typed, and turned into one checked run config per stage before any stage runs.

A pipeline YAML has `output_dir`, `stages` (in order) and optionally `base_model`. Each stage has a
unique `name`, optionally `config` (a run YAML it starts from) and `overrides` (`key.sub=value`),
and any run-config keys inline, nested (`model: {path: ...}`) or dotted (`model.path: ...`). String
values may refer to an earlier stage's output: `${sft.final}` is `OUTPUT_DIR/sft/final`. Layers, last
wins: the stage's `config` file, its inline keys, its `overrides`, then `--set STAGE.key=value`.
The stage's `trainer.output_dir` is always `OUTPUT_DIR/STAGE`.

Everything here is pure except reading the YAML files; errors are ConfigErrors that name the
pipeline file, the stage and the dotted key.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from rlhf.config import Config, ConfigError, from_dict, parse_override, read_yaml, set_dotted

REFERENCE = re.compile(r"\$\{([^}]*)\}")
OUTPUTS = ("final",)
"""What `${STAGE.X}` may name: the stage's `final/` folder (its trained model in Hugging Face format)."""
STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
STAGE_KEYS = ("name", "config", "overrides")
"""A stage's own keys; every other key of a stage is a run-config key."""


@dataclass
class StageSpec:
    name: str
    """Unique; the stage's folder under `output_dir` and its name in references (`${name.final}`)."""
    config: Optional[str] = None
    """A run config (YAML) the stage starts from; relative paths are relative to the working directory."""
    overrides: list[str] = field(default_factory=list)
    """`key.sub=value` overrides, applied after the inline keys."""
    settings: dict = field(default_factory=dict)
    """The run-config keys written inline in the stage (nested sections or dotted keys)."""


@dataclass
class PipelineConfig:
    output_dir: str
    """Each stage runs in `output_dir/STAGE`; the report (report.md, report.png) is written here."""
    stages: list[StageSpec]
    """Run in this order, one after another, on one Ray."""
    base_model: Optional[str] = None
    """The pipeline's starting model, that every stage's forgetting gate measures general drops against.
    null: the model.path of the first stage that trains the policy (not `rm`)."""

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage_dir(self, name: str) -> str:
        return os.path.join(self.output_dir, name)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def parse_stage(entry: Any, where: str) -> StageSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with name, config, overrides and config keys")
    if "name" not in entry:
        raise ConfigError(f"{where}.name: is required")
    name = _text(entry["name"], f"{where}.name")
    if not STAGE_NAME.match(name):
        raise ConfigError(f"{where}.name: {name!r} may only hold letters, digits, _ and - (it names a folder)")
    config = entry.get("config")
    overrides = entry.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{where}.overrides: expected a list of key.sub=value strings")
    settings = {k: v for k, v in entry.items() if k not in STAGE_KEYS}
    return StageSpec(name, _text(config, f"{where}.config") if config is not None else None, overrides, settings)


def parse_pipeline(raw: Any, file: str) -> PipelineConfig:
    """The pipeline YAML's top-level mapping -> PipelineConfig; unknown keys fail naming them."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the top level must be a mapping (output_dir, stages, base_model)")
    known = [f.name for f in dataclasses.fields(PipelineConfig)]
    for key in raw:
        if key not in known:
            raise ConfigError(f"{file}: {key}: unknown key (known here: {', '.join(sorted(known))})")
    if "output_dir" not in raw:
        raise ConfigError(f"{file}: output_dir: is required")
    stages = raw.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{file}: stages: expected a non-empty list of stages")
    parsed = [parse_stage(entry, f"{file}: stages[{i}]") for i, entry in enumerate(stages)]
    seen: set[str] = set()
    for i, stage in enumerate(parsed):
        if stage.name in seen:
            raise ConfigError(f"{file}: stages[{i}].name: {stage.name!r} is used by an earlier stage; names must be unique")
        seen.add(stage.name)
    base = raw.get("base_model")
    return PipelineConfig(_text(raw["output_dir"], f"{file}: output_dir"), parsed,
                          _text(base, f"{file}: base_model") if base is not None else None)


def split_cli_overrides(sets: list[str], names: list[str]) -> dict[str, list[str]]:
    """`--set STAGE.key.sub=value` -> {STAGE: ["key.sub=value"]}; an unknown stage fails naming it."""
    out: dict[str, list[str]] = {name: [] for name in names}
    for text in sets:
        stage, dot, rest = text.partition(".")
        if not dot or "=" not in rest or "=" in stage:
            raise ConfigError(f"--set {text!r}: expected STAGE.key.sub=value")
        if stage not in out:
            raise ConfigError(f"--set {text!r}: no stage named {stage!r} (stages: {', '.join(names)})")
        out[stage].append(rest)
    return out


def deep_merge(tree: dict, extra: dict) -> dict:
    """Merge `extra` into `tree` in place: sections merge key by key, dotted keys (`a.b: v`) land in their
    section, anything else replaces the old value."""
    for key, value in extra.items():
        if "." in key:
            head, rest = key.split(".", 1)
            value, key = {rest: value}, head
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            deep_merge(tree[key], value)
        else:
            tree[key] = deep_merge({}, value) if isinstance(value, dict) else value
    return tree


def stage_tree(stage: StageSpec, cli_overrides: list[str]) -> dict:
    """The stage's run config as plain data: its config file, inline keys, overrides, then `--set`."""
    tree = read_yaml(stage.config) if stage.config else {}
    deep_merge(tree, copy.deepcopy(stage.settings))
    for text in [*stage.overrides, *cli_overrides]:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
    return tree


def resolve_references(tree: Any, pipeline: PipelineConfig, index: int, key: str = "") -> tuple[Any, dict[str, str]]:
    """Replace every `${STAGE.final}` in the string values of `tree` (stage number `index`).

    Returns the new tree and {dotted key: referenced stage}. A malformed reference, an unknown stage,
    the stage itself or a later one, or an unknown output fails naming the key."""
    if isinstance(tree, dict):
        out, refs = {}, {}
        for k, v in tree.items():
            out[k], found = resolve_references(v, pipeline, index, f"{key}.{k}" if key else str(k))
            refs.update(found)
        return out, refs
    if isinstance(tree, list):
        pairs = [resolve_references(v, pipeline, index, f"{key}[{i}]") for i, v in enumerate(tree)]
        return [p[0] for p in pairs], {k: s for _, found in pairs for k, s in found.items()}
    if not isinstance(tree, str):
        return tree, {}
    refs: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        stage, dot, output = match.group(1).strip().partition(".")
        if not dot or not stage or "." in output:
            raise ConfigError(f"{key}: {match.group(0)!r} is not a reference; write ${{STAGE.final}}")
        if stage not in pipeline.names:
            raise ConfigError(f"{key}: {match.group(0)} names no stage (stages: {', '.join(pipeline.names)})")
        position = pipeline.names.index(stage)
        if position >= index:
            when = "is this stage" if position == index else "runs after this one"
            raise ConfigError(f"{key}: {match.group(0)}: stage {stage!r} {when}; a stage can only use the "
                              "outputs of earlier stages")
        if output not in OUTPUTS:
            raise ConfigError(f"{key}: {match.group(0)}: unknown output {output!r} (known: {', '.join(OUTPUTS)})")
        refs[key] = stage
        return os.path.join(pipeline.stage_dir(stage), output)

    return REFERENCE.sub(replace, tree), refs


@dataclass
class StagePlan:
    name: str
    cfg: Config
    """The stage's validated run config (trainer.output_dir = OUTPUT_DIR/STAGE)."""
    references: dict[str, str]
    """Dotted key -> the earlier stage whose output it names; those paths exist only once that stage ran."""


def plan_stage(pipeline: PipelineConfig, index: int, cli_overrides: list[str], file: str) -> StagePlan:
    """One stage's run config, references resolved and validated; errors name the file and the stage."""
    stage = pipeline.stages[index]
    try:
        tree = stage_tree(stage, cli_overrides)
        tree, refs = resolve_references(tree, pipeline, index)
        set_dotted(tree, "trainer.output_dir", pipeline.stage_dir(stage.name))
        return StagePlan(stage.name, from_dict(tree), refs)
    except ConfigError as err:
        raise ConfigError(f"{file}: stage {stage.name!r}: {err}") from None


def starting_model(pipeline: PipelineConfig, plans: list[StagePlan]) -> Optional[str]:
    """`base_model`, else the model.path of the first stage that trains the policy (rm trains a reward model)."""
    if pipeline.base_model:
        return pipeline.base_model
    return next((p.cfg.model.path for p in plans if p.cfg.algorithm.name != "rm"), None)


def same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)
