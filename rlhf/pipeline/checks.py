"""Every stage of a pipeline is checked before the first one runs.

Each stage's config goes through the same `load` + `validate` + preflight as `rlhf train`, except the
existence checks of paths that come from references (`${sft.final}`): those folders are written by an
earlier stage. Rules across stages: a referenced stage must save its final model (for a stage that trains
adapters, the merged model in `final/merged`: its `final/` holds only the adapters), and every stage with a
general-ability probe must probe the same way, since all their drops are measured against the one starting
model.
"""
from __future__ import annotations

import os
from functools import reduce

from rlhf.config import ConfigError
from rlhf.config.schema import VIRTUAL_TOKEN_TYPES
from rlhf.pipeline.spec import PipelineConfig, StagePlan, plan_stage, same_path, starting_model

PROBE_KEYS = ("general_text_path", "general_prompts_path", "general_checker", "max_new_tokens", "max_samples")
"""The eval keys that define the general-ability probe: equal in every probed stage."""


def preflight_stage(plan: StagePlan) -> None:
    """`rlhf train`'s checks of paths, reward functions and PEFT targets, minus what references supply."""
    from rlhf.preflight import check_paths, check_peft_targets, check_reward_sources

    check_paths(plan.cfg, frozenset(plan.references))
    check_reward_sources(plan.cfg)
    if "model.path" not in plan.references:
        check_peft_targets(plan.cfg)


def check_references(plans: list[StagePlan]) -> None:
    by_name = {p.name: p for p in plans}
    for plan in plans:
        for key, stage in plan.references.items():
            if not by_name[stage].cfg.trainer.save_hf_model:
                raise ConfigError(f"stage {plan.name!r}: {key}: refers to {stage}'s final model, but stage {stage!r} "
                                  "has trainer.save_hf_model=false and writes none")
            check_adapter_reference(plan, key, by_name[stage])


def check_adapter_reference(plan: StagePlan, key: str, source: StagePlan) -> None:
    """A model path that names a stage training adapters must name its merged model, and that stage must write one."""
    method = source.cfg.model.peft_method
    if method is None or not key.startswith("model."):
        return
    where = f"stage {plan.name!r}: {key}: refers to {source.name}'s final model, but stage {source.name!r} trains {method}"
    if method in VIRTUAL_TOKEN_TYPES:
        raise ConfigError(f"{where} virtual tokens, which no model folder holds; train that stage without them "
                          "(model.peft.type) to use its model in a later stage")
    if not source.cfg.model.lora.save_merged:
        raise ConfigError(f"{where} adapters and its final/ holds only them; set model.lora.save_merged: true in "
                          f"stage {source.name!r} and refer to ${{{source.name}.final}}/merged")
    value = reduce(getattr, key.split("."), plan.cfg)
    if not same_path(value, os.path.join(source.cfg.trainer.output_dir, "final", "merged")):
        raise ConfigError(f"{where} adapters and its final/ holds only them; refer to ${{{source.name}.final}}/merged, "
                          "the merged model")


def check_probes(plans: list[StagePlan]) -> None:
    probed = [p for p in plans if p.cfg.eval.general_probe]
    for plan in probed[1:]:
        for key in PROBE_KEYS:
            first, mine = getattr(probed[0].cfg.eval, key), getattr(plan.cfg.eval, key)
            if mine != first:
                raise ConfigError(f"stage {plan.name!r}: eval.{key}: {mine!r} differs from stage {probed[0].name!r}'s "
                                  f"{first!r}; every stage's general drop is measured against the pipeline's starting "
                                  "model, so all stages must probe the same way")


def check_pipeline(pipeline: PipelineConfig, cli_overrides: dict[str, list[str]], file: str) -> list[StagePlan]:
    """All stages planned and checked; the first error names the file, the stage and the key."""
    plans = [plan_stage(pipeline, i, cli_overrides.get(s.name, []), file) for i, s in enumerate(pipeline.stages)]
    for plan in plans:
        try:
            preflight_stage(plan)
        except ConfigError as err:
            raise ConfigError(f"{file}: stage {plan.name!r}: {err}") from None
    try:
        check_references(plans)
        check_probes(plans)
    except ConfigError as err:
        raise ConfigError(f"{file}: {err}") from None
    base = starting_model(pipeline, plans)
    if pipeline.base_model and not os.path.isfile(os.path.join(base, "config.json")):
        raise ConfigError(f"{file}: base_model: {base!r} is not a Hugging Face model folder (no config.json)")
    return plans
