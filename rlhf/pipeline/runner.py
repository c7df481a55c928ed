"""Runs a pipeline: `rlhf pipeline CONFIG [--resume] [--set STAGE.key=value]` or
`python -m rlhf.pipeline --config CONFIG` (for `ray job submit`).

Lifecycle: parse the pipeline file and check every stage (rlhf.pipeline.checks) before anything
runs or is written; start or join one Ray, sized for the largest stage; then for each stage in order:
1. decide from its folder whether to skip, resume or start it (rlhf.pipeline.progress);
2. give it the pipeline's general baseline (the starting model's probe), measured first if needed;
3. `run_training` it in `OUTPUT_DIR/STAGE` (which releases the stage's actors when it ends);
4. write its summary, the baseline once known, and the report;
5. end the pipeline if the stage was stopped (a signal, or the forgetting gate with `stop`).
A signal between stages ends the pipeline before the next one; `--resume` continues it.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, Sequence

from rlhf.config import Config, ConfigError, read_yaml
from rlhf.modes.spec import SPECS
from rlhf.pipeline.checks import check_pipeline
from rlhf.pipeline.progress import (FINISHED, GATE_STOPPED, INTERRUPTED, RESUME, SKIP, SUMMARY, baseline_from_probe,
                                    baseline_from_summary, holds_pipeline, read_baseline, read_json, stage_action,
                                    stage_outcome, write_baseline, write_json)
from rlhf.pipeline.report import mode_label, report_row, write_report
from rlhf.pipeline.spec import PipelineConfig, StagePlan, parse_pipeline, same_path, split_cli_overrides, starting_model

logger = logging.getLogger("rlhf.pipeline")


@dataclass
class PipelineResult:
    outcome: str
    """`finished`, `gate_stopped` or `interrupted`."""
    stage: Optional[str]
    """The stage it ended at (None when it finished)."""
    message: str
    report: str
    stop_signal: int = int(signal.SIGTERM)


def stage_config(plan: StagePlan, baseline: Optional[dict], group: str) -> Config:
    """The stage's config with the pipeline's general baseline (unless it sets its own) and its W&B group."""
    cfg = plan.cfg
    if baseline and cfg.eval.general_probe and not cfg.eval.general_baseline:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, general_baseline=dict(baseline)))
    wandb = cfg.logging.wandb
    if wandb.enabled:
        wandb = dataclasses.replace(wandb, group=wandb.group or group, run_name=wandb.run_name or plan.name)
        cfg = dataclasses.replace(cfg, logging=dataclasses.replace(cfg.logging, wandb=wandb))
    return cfg


def measure_baseline(cfg: Config, base: str) -> dict[str, float]:
    """The general probe of the starting model on the driver (when no stage starts from it before a probed one)."""
    from rlhf.evaluation.probe import GeneralProbe, run_probe
    from rlhf.models.loading import load_causal_lm, load_tokenizer

    probe = GeneralProbe.from_config(cfg.eval, load_tokenizer(base, cfg.model.trust_remote_code))
    model = load_causal_lm(base, cfg.model.dtype, cfg.model.trust_remote_code)
    return baseline_from_probe(probe.metrics(run_probe(model, *probe.actor_args())))


@contextmanager
def stop_between_stages():
    """SIGTERM or Ctrl-C while no stage runs (a running stage has its own handler, rlhf.train.stop_on_signals):
    remember it, so the pipeline ends before the next stage. Yields the list the signal number lands in."""
    from rlhf.train import one_stop_signal

    received: list[int] = []
    with one_stop_signal("the pipeline ends before its next stage", received.append):
        yield received


def start_ray(plans: list[StagePlan]) -> bool:
    """Start or join Ray once, sized for the stage that needs the most CPUs; True when this call started it."""
    from rlhf.train import init_ray, local_cpus

    groups = {p.name: [*SPECS[p.cfg.algorithm.name].trained, *SPECS[p.cfg.algorithm.name].frozen] for p in plans}
    largest = max(plans, key=lambda p: local_cpus(p.cfg, groups[p.name]))
    return init_ray(largest.cfg, groups[largest.name])


class PipelineRun:
    """The state of one pipeline run: its checked stages, their summaries so far and the general baseline."""

    def __init__(self, pipeline: PipelineConfig, plans: list[StagePlan]) -> None:
        self.pipeline, self.plans, self.out = pipeline, plans, pipeline.output_dir
        self.base = starting_model(pipeline, plans)
        self.summaries = {p.name: read_json(os.path.join(pipeline.stage_dir(p.name), SUMMARY)) for p in plans}
        self.baseline = read_baseline(self.out)
        self.group = os.path.basename(os.path.normpath(self.out))
        """The W&B group of every stage: the pipeline folder's name."""

    def report(self, status: Optional[dict[str, str]] = None) -> str:
        rows = [report_row(p.name, mode_label(p.cfg), self.summaries[p.name], (status or {}).get(p.name))
                for p in self.plans]
        return write_report(self.out, rows, self.base, self.baseline)

    def set_baseline(self, value: Optional[dict], source: str) -> None:
        if value:
            self.baseline = value
            write_baseline(self.out, value, self.base, source)
            logger.info("pipeline baseline (%s, %s): %s", self.base, source, value)

    def run_stage(self, plan: StagePlan, resume: bool, received: list[int]) -> dict:
        """Steps 2-4 of the module docstring for one stage; returns its run summary. A signal that lands in
        `received` after the stage began, before its run handles signals itself, stops it like one during it."""
        from rlhf.summary import print_summary
        from rlhf.train import run_training

        cfg = plan.cfg
        if cfg.eval.general_probe and self.baseline is None and self.base and not same_path(cfg.model.path, self.base):
            self.set_baseline(measure_baseline(cfg, self.base), "probed on the driver")
        logger.info("pipeline stage %r (%s): %s", plan.name, mode_label(cfg), "resuming" if resume else "starting")
        self.report({plan.name: "running"})
        try:
            summary = run_training(stage_config(plan, self.baseline, self.group), resume=resume, pending_stop=received)
        except BaseException:
            self.report({plan.name: "failed"})
            raise
        write_json(os.path.join(self.pipeline.stage_dir(plan.name), SUMMARY), summary)
        print_summary(summary)
        return summary

    def run(self, received: list[int]) -> PipelineResult:
        """The stages in order; `received`: signals that arrived while no stage ran."""
        for plan in self.plans:
            action = stage_action(self.pipeline.stage_dir(plan.name), plan.cfg.trainer.save_hf_model)
            # 1. Skip, resume or start; a stage the gate stopped, or a stop request, ends the pipeline here.
            if action == GATE_STOPPED:
                return _ended(self.summaries[plan.name], plan.name, self.report())
            if action != SKIP and received:
                return PipelineResult(INTERRUPTED, plan.name, f"stopped on request before stage {plan.name!r}; "
                                      "rerun with --resume to continue", self.report(), received[0])
            # 2-4. Run it with the baseline, record its summary.
            if action == SKIP:
                logger.info("pipeline stage %r: finished before, skipped", plan.name)
            else:
                self.summaries[plan.name] = self.run_stage(plan, action == RESUME, received)
            summary = self.summaries[plan.name]
            if (plan.cfg.eval.general_probe and self.baseline is None and self.base
                    and same_path(plan.cfg.model.path, self.base)):
                self.set_baseline(baseline_from_summary(summary), f"step 0 of stage {plan.name}")
            path = self.report()
            # 5. A stop (signal or gate) ends the pipeline; a warning of the gate is reported and it goes on.
            if stage_outcome(summary) != FINISHED:
                return _ended(summary, plan.name, path)
            if (summary.get("evaluation") or {}).get("gate") == "warned":
                logger.warning("stage %r went over eval.max_general_drop (eval.on_general_drop=warn); the pipeline "
                               "goes on", plan.name)
        return PipelineResult(FINISHED, None, f"pipeline finished: {len(self.plans)} stages; report: {path}", path)


def run_pipeline(file: str, resume: bool = False, overrides: Sequence[str] = (), quiet: bool = False) -> PipelineResult:
    """Check, then run the stages of the pipeline file in order; see the module docstring. `quiet`: filter
    the library noise (as `rlhf train` does) unless a stage sets logging.verbose."""
    import ray

    pipeline = parse_pipeline(read_yaml(file), file)
    plans = check_pipeline(pipeline, split_cli_overrides(list(overrides), pipeline.names), file)
    taken = holds_pipeline(pipeline.output_dir, pipeline.names)
    if taken and not resume:
        raise ConfigError(f"{file}: output_dir: {pipeline.output_dir!r} already holds stages of a pipeline "
                          f"({', '.join(taken)}); continue it with --resume, or choose another folder")
    if quiet and not any(p.cfg.logging.verbose for p in plans):
        from rlhf.quiet import install as quiet_library_noise

        quiet_library_noise()
    os.makedirs(pipeline.output_dir, exist_ok=True)
    record = os.path.join(pipeline.output_dir, "pipeline.yaml")
    if not same_path(file, record):  # resuming from the pipeline's own copy
        shutil.copyfile(file, record)
    started_ray = start_ray(plans)
    try:
        with stop_between_stages() as received:
            return PipelineRun(pipeline, plans).run(received)
    finally:
        if started_ray:
            ray.shutdown()


def _ended(summary: dict, stage: str, report: str) -> PipelineResult:
    """The result of a pipeline that a stage's stop (the gate or a signal) ended."""
    if stage_outcome(summary) == GATE_STOPPED:
        ev = summary["evaluation"]
        drop, limit = ev.get("general_drop"), ev["max_general_drop"]
        return PipelineResult(GATE_STOPPED, stage, (
            f"pipeline stopped by the forgetting gate at stage {stage!r}: general drop "
            f"{'n/a' if drop is None else f'{100 * drop:.1f}%'} against the pipeline's starting model "
            f"(limit {100 * limit:.1f}%, eval.on_general_drop=stop); best model within the limit: "
            f"{ev.get('best_model') or 'none (no evaluated point was within it)'}"), report)
    return PipelineResult(INTERRUPTED, stage, f"stage {stage!r} stopped on request; rerun the pipeline with --resume "
                          "to continue it", report, summary.get("stop_signal", int(signal.SIGTERM)))


def add_pipeline_arguments(parser: argparse.ArgumentParser, config_flag: bool) -> None:
    if config_flag:
        parser.add_argument("--config", required=True, help="pipeline YAML file")
    else:
        parser.add_argument("config", help="pipeline YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE",
                        help="override a stage's config key, e.g. --set sft.trainer.steps=10 (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue: skip finished stages, resume the interrupted one")


def pipeline_command(args: argparse.Namespace) -> int:
    """Exit codes as `rlhf train`: 0 done, 2 bad input, 1 a failed stage, 3 the gate stopped it, 128+N a signal."""
    from rlhf.data.reader import DataError
    from rlhf.faults import PhaseFailed, TooManyBadSteps, TrainingRankDied
    from rlhf.secrets import install_redaction

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()
    try:
        result = run_pipeline(args.config, args.resume, args.overrides, quiet=True)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (TrainingRankDied, TooManyBadSteps, PhaseFailed) as err:
        print(f"error: {err}\nrerun the pipeline with --resume to continue", file=sys.stderr, flush=True)
        return 1
    print(result.message, flush=True)
    return {FINISHED: 0, GATE_STOPPED: 3}.get(result.outcome, 128 + result.stop_signal)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pipeline_arguments(parser, config_flag=True)
    return pipeline_command(parser.parse_args(argv))
