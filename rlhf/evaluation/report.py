"""Reporting evaluation: the run summary's lines, and `rlhf eval --model PATH --config CONFIG`.

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
import math
import os
import shutil
import sys
import tempfile
from typing import Optional

from rlhf.evaluation.scores import DROP, GAIN, general_drop, target_gain
from rlhf.evaluation.tracker import TARGETS

logger = logging.getLogger(__name__)


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.1f}%"


def _num(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary_lines(ev: dict) -> list[str]:
    """Target gain and general drop side by side, then the gate and the best model."""
    limit = ev.get("max_general_drop")
    drop = ev.get("general_drop")
    lines = [f"target           {ev['target']} {_num(ev['target_start'])} -> {_num(ev['target_end'])} "
             f"(gain {_pct(ev['target_gain'])})   general drop {'n/a' if drop is None else f'{100 * drop:.1f}%'}"
             + (f" (limit {100 * limit:.1f}%, gate {ev['gate']})" if limit is not None else "")]
    for key, (start, end) in ev.get("general", {}).items():
        lines.append(f"{key:<24} {_num(start)} (start) -> {_num(end)} (end)")
    if ev.get("best_model"):
        drop = ev.get("best_general_drop")
        lines.append(f"best model       {ev['best_model']} (step {ev['best_step']}: {ev['target']} "
                     f"{_num(ev.get('best_target'))}, general drop "
                     f"{'n/a' if drop is None else f'{100 * drop:.1f}%'}, within the limit)")
    return lines


def compare(mode: str, start: dict, model: dict) -> dict:
    """The report's changes of `model` against the starting model."""
    out = general_drop(start, model)
    key, higher = TARGETS[mode]
    if key in start and key in model:
        out[GAIN] = target_gain(start[key], model[key], higher)
    return {"target": key, **out}


def model_config(cfg, model_path: str, output_dir: str):
    """`cfg` with `model_path` as the model under evaluation; DPO's reference stays the starting model."""
    model = cfg.model
    lora = dataclasses.replace(model.lora, fold_reference=False) if model.lora.rank else model.lora
    model = dataclasses.replace(model, path=model_path, reference_path=model.reference_path or model.path, lora=lora)
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

    if cfg.algorithm.name == "ppo":
        raise ValueError("rlhf eval supports the sft, dpo, rm and rlaif configs (PPO evaluates during training)")
    if os.path.isfile(os.path.join(model_path, "adapter_config.json")):
        raise ValueError(f"{model_path}: a PEFT adapter folder; save with model.lora.save_merged=true and pass "
                         f"{os.path.join(model_path, 'merged')}")
    from rlhf.modes import build_driver

    cfg.validate()
    check_eval_data(cfg)
    scratch = tempfile.mkdtemp(prefix="rlhf-eval-")  # the drivers' data_report.json and placement.json
    drivers = [build_driver(model_config(cfg, path, os.path.join(scratch, name)))  # bad input fails here
               for name, path in (("start", cfg.model.path), ("model", model_path))]
    started_ray = init_ray(cfg, drivers[0].group_names())
    try:
        start, evaluated = evaluate_model(drivers[0]), evaluate_model(drivers[1])
    finally:
        if started_ray:
            ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    changes = compare(cfg.algorithm.name, start, evaluated)
    return {"model": model_path, "starting_model": cfg.model.path, "mode": cfg.algorithm.name,
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
