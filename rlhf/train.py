"""Entry point of every training run: `rlhf train CONFIG` or `python -m rlhf.train --config CONFIG`.

With no Ray address (neither `ray.address` nor RAY_ADDRESS) it starts a local Ray sized for
the configured groups; otherwise it joins that cluster. The same command runs under
`ray job submit`, where RAY_ADDRESS is set for the driver.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Optional, Sequence

from rlhf.config import Config, ConfigError, dump, load
from rlhf.secrets import install_redaction

logger = logging.getLogger("rlhf")


def add_train_arguments(parser: argparse.ArgumentParser, config_flag: bool) -> None:
    if config_flag:
        parser.add_argument("--config", required=True, help="YAML config file")
    else:
        parser.add_argument("config", help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set trainer.steps=10 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")


def _local_cpus(cfg: Config, groups: list[str]) -> int:
    """Logical CPUs for a local Ray: enough for every group (phases mostly run one at a time)."""
    if cfg.ray.num_cpus:
        return cfg.ray.num_cpus
    wanted = sum(getattr(cfg.ray, g).num_cpus * getattr(cfg.ray, g).replicas for g in groups)
    return max(os.cpu_count() or 1, int(wanted + 0.999))


def init_ray(cfg: Config, groups: list[str]) -> bool:
    """Start or join Ray; returns True when this call started it (and so must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return True
    ray.init(num_cpus=_local_cpus(cfg, groups), include_dashboard=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    return True


def print_summary(summary: dict) -> None:
    if "headline" in summary:  # sft, rm, dpo, rlaif: the mode's own metrics, at the start and at the end
        lines = [f"{key:<24} {start:.4f} (start) -> {end:.4f} (end)" for key, (start, end) in summary["headline"].items()]
    else:
        lines = [f"reward           {summary['reward_start']:.4f} (first steps) -> {summary['reward_end']:.4f} (last steps)",
                 f"kl               {summary['kl_end']:.4f}   kl coef {summary['kl_coef']:.5f}"]
    if summary.get("evaluation"):
        from rlhf.evaluation.report import summary_lines

        lines += summary_lines(summary["evaluation"])
    print(
        "\n== run summary ==\n"
        f"mode             {summary.get('mode', 'ppo')}\n"
        f"steps            {summary['steps']}\n"
        + "".join(line + "\n" for line in lines)
        + f"wall time        {summary['wall_s']:.1f} s\n"
        f"metrics          {summary['metrics']}\n"
        f"final model      {summary['final_model']}\n"
        f"outputs          {summary['output_dir']}",
        flush=True,
    )


@contextmanager
def stop_on_signals(orchestrator):
    """SIGTERM (what `ray job stop` sends) or Ctrl-C: finish the step, checkpoint, end cleanly.

    A second signal falls back to the default (immediate) behaviour. Only the main thread
    can install handlers; elsewhere (a test calling run_training in a thread) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        logger.warning("received %s: stopping after the current step with a checkpoint",
                       signal.Signals(signum).name)
        orchestrator.request_stop()
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_training(cfg: Config, resume: bool = False) -> dict:
    """Validate, start/join Ray, run the mode named by `algorithm.name`, and always tear the actors down."""
    import ray

    from rlhf.evaluation.leakage import check_eval_data
    from rlhf.modes import build_driver

    cfg.validate()
    os.makedirs(cfg.trainer.output_dir, exist_ok=True)
    dump(cfg, os.path.join(cfg.trainer.output_dir, "config.yaml"))
    driver = build_driver(cfg)  # reads data and tokenizer: bad input fails before any actor
    check_eval_data(cfg)  # no evaluation row may be a training row
    started_ray = init_ray(cfg, driver.group_names())
    try:
        with stop_on_signals(driver):
            driver.start(resume=resume)
            return driver.run()
    finally:
        driver.shutdown()
        if started_ray:
            ray.shutdown()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.train", description=__doc__)
    add_train_arguments(parser, config_flag=True)
    args = parser.parse_args(argv)
    return train_command(args)


def train_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()
    try:
        cfg = load(args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    from rlhf.data.reader import DataError
    from rlhf.faults import TooManyBadSteps, TrainingRankDied

    try:
        summary = run_training(cfg, resume=args.resume)
    except (DataError, ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (TrainingRankDied, TooManyBadSteps) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    print_summary(summary)
    if summary.get("evaluation", {}).get("gate") == "stopped":
        print("stopped by the forgetting gate (eval.on_general_drop=stop); best model within the limit: "
              f"{summary['evaluation']['best_model']}", flush=True)
        return 3
    if summary["stopped"]:
        print("stopped on request; resubmit with --resume to continue", flush=True)
        return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())
