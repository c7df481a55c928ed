"""`rlhf eval --model PATH --config CONFIG`: a saved model against the config's starting model.

`rlhf eval` evaluates a saved model (a Hugging Face folder such as final/ or best/) exactly as a
run evaluates at its eval points, on the same actor groups the config's mode starts (held-out
target metric and general probe), then the config's starting model the same way, and prints and
writes a JSON report of both and of the changes (target gain, general drop).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Optional

from rlhf.evaluation.scores import DROP, GAIN, GENERAL_KEYS, general_drop, target_gain

logger = logging.getLogger(__name__)


def compare(mode: str, start: dict, model: dict, task_reward: Optional[str] = None,
            general_baseline: Optional[dict[str, float]] = None) -> dict:
    """The report's changes of `model` against the starting model; general drops against `general_baseline`
    (`eval.general_baseline`: a pipeline's starting model) where given, as the run measured them."""
    from rlhf.evaluation.task_reward import target_metric  # imports torch: not at `rlhf` start-up

    baseline = {GENERAL_KEYS[name]: value for name, value in (general_baseline or {}).items()}
    out = general_drop({**start, **baseline}, model)
    key, higher = target_metric(mode, task_reward)
    if key in start and key in model:
        out[GAIN] = target_gain(start[key], model[key], higher)
    return {"target": key, **out}


def starting_model(cfg) -> tuple[str, str]:
    """(config key, path) of the model a run of `cfg` starts from: rm trains `model.reward_path` when set,
    the other modes `model.path`."""
    if cfg.algorithm.name == "rm" and cfg.model.reward_path:
        return "model.reward_path", cfg.model.reward_path
    return "model.path", cfg.model.path


def model_config(cfg, model_path: str, output_dir: str):
    """`cfg` with `model_path` as the model under evaluation; DPO's reference stays the starting model."""
    model = cfg.model
    if cfg.algorithm.name == "rm":  # the classifier under evaluation; model.path still names the tokenizer
        model = dataclasses.replace(model, reward_path=model_path)
    else:
        lora = dataclasses.replace(model.lora, fold_reference=False) if model.lora.rank else model.lora
        model = dataclasses.replace(model, path=model_path, reference_path=model.reference_path or model.path,
                                    lora=lora)
    return dataclasses.replace(cfg, model=model, trainer=dataclasses.replace(cfg.trainer, output_dir=output_dir))


def evaluate_model(driver) -> dict:
    """Start the mode's groups, evaluate once, tear them down."""
    try:
        driver.start()
        return driver.evaluate_once()
    finally:
        driver.shutdown()


def run_eval(cfg, model_path: str) -> dict:
    import ray

    from rlhf.evaluation.leakage import check_eval_data
    from rlhf.train import init_ray

    if os.path.isfile(os.path.join(model_path, "adapter_config.json")):
        raise ValueError(f"{model_path}: a PEFT adapter folder; save with model.lora.save_merged=true and pass "
                         f"{os.path.join(model_path, 'merged')}")
    from rlhf.modes import build_runtime

    cfg.validate()
    check_eval_data(cfg)
    start_key, start_path = starting_model(cfg)
    for key, path in (("--model", model_path), (start_key, start_path)):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{key}: {path!r} is not a Hugging Face model folder (no config.json)")
    scratch = tempfile.mkdtemp(prefix="rlhf-eval-")  # the runtimes' placement.json
    drivers = [build_runtime(model_config(cfg, path, os.path.join(scratch, name)))  # bad input fails here
               for name, path in (("start", start_path), ("model", model_path))]
    for driver in drivers:
        os.makedirs(driver.output_dir)
    started_ray = init_ray(cfg, drivers[0].group_names())
    try:
        start = evaluate_model(drivers[0])
        # A mode that scores against the starting policy's samples (rlaif's win-rate) keeps them from the first
        # evaluation; the model under test must be compared with the start's, not with its own.
        if hasattr(drivers[0].mode, "baseline_scores"):
            drivers[1].mode.baseline_scores = drivers[0].mode.baseline_scores
        evaluated = evaluate_model(drivers[1])
    finally:
        if started_ray:
            ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    changes = compare(cfg.algorithm.name, start, evaluated, cfg.eval.task_reward, cfg.eval.general_baseline)
    return {"model": model_path, "starting_model": start_path, "mode": cfg.algorithm.name,
            "starting_metrics": start, "model_metrics": evaluated, "changes": changes,
            "max_general_drop": cfg.eval.max_general_drop,
            "within_limit": cfg.eval.max_general_drop is None or changes[DROP] <= cfg.eval.max_general_drop}


def add_eval_subcommand(sub) -> None:
    parser = sub.add_parser("eval", help="evaluate a saved model against the config's starting model")
    parser.add_argument("--model", required=True, help="Hugging Face model folder (e.g. OUTPUT/final or OUTPUT/best)")
    parser.add_argument("--config", required=True, help="the YAML config whose data and eval sections to use")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="JSON report path (default: MODEL/eval_report.json)")
    parser.set_defaults(func=eval_command)


def eval_command(args: argparse.Namespace) -> int:
    from rlhf.config import ConfigError, load
    from rlhf.data.reader import DataError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load(args.config, args.overrides)
        report = run_eval(cfg, args.model)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or os.path.join(args.model, "eval_report.json")
    with open(out, "w") as fh:
        json.dump(report, fh, indent=1)
    print(json.dumps(report, indent=1), flush=True)
    print(f"report written to {out}", flush=True)
    return 0
