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
import time
from contextlib import contextmanager
from typing import Callable, Optional, Sequence

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


def local_cpus(cfg: Config, groups: list[str]) -> int:
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
    from actors.groups import init_local_ray

    # Ray boots idle workers for the job when the driver connects; no actor here needs one, and they only
    # took CPU from the actors' start (bench/README.md, "Start-up").
    init_local_ray(local_worker_env(cfg.logging.verbose), num_cpus=local_cpus(cfg, groups), include_dashboard=False,
                   _system_config={"prestart_worker_first_driver": False})
    return True


def local_worker_env(verbose: bool) -> dict[str, str]:
    """What the workers of a local Ray inherit: the variables every actor starts with (thread policy, quiet
    filters, and on a machine without GPUs `CUDA_VISIBLE_DEVICES=""`, which there hides nothing), so that
    only actors needing more (a GPU's visibility, an in-process engine's thread spin) pay for a runtime_env."""
    import torch

    from actors.common import worker_env
    from rlhf import quiet

    env = {**worker_env(0), **quiet.actor_env(verbose)}
    if torch.cuda.is_available():  # Ray counts the GPUs it can see when it starts
        env.pop("CUDA_VISIBLE_DEVICES")
    return env


@contextmanager
def one_stop_signal(consequence: str, on_signal: Callable[[int], None]):
    """SIGTERM (what `ray job stop` sends) or Ctrl-C calls `on_signal(signum)` once and logs `consequence`;
    a second signal falls back to the default (immediate) behaviour. Only the main thread can install
    handlers; elsewhere (a test calling run_training in a thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        logger.warning("received %s: %s", signal.Signals(signum).name, consequence)
        on_signal(int(signum))
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stop_on_signals(runtime):
    """Finish the current step, checkpoint, end cleanly."""
    return one_stop_signal("stopping after the current step with a checkpoint", runtime.request_stop)


def process_started_at() -> Optional[float]:
    """Wall-clock time this process started (Linux /proc), so start-up counts interpreter and imports; else None."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, after the command name
        with open("/proc/uptime") as fh:
            uptime_s = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - uptime_s + ticks / os.sysconf("SC_CLK_TCK")


def run_training(cfg: Config, resume: bool = False, started_at: Optional[float] = None,
                 pending_stop: Sequence[int] = ()) -> dict:
    """Check everything the driver can, build the mode's runtime (reads data), claim the output
    folder, start or join Ray, run, and always tear the actors down. Nothing is written into the
    output folder before the config, its paths and the data have been checked.

    `pending_stop`: where a caller's own handler puts the signals that arrive before this run installs
    its handler (a pipeline's stage that is starting); read once the run's handler is in place, so a
    signal in either window stops the run after its first step, with a checkpoint.

    `started_at` (wall-clock seconds; default: now) is where `timing/startup_s` counts from: the CLI
    passes its process's start, so the figure is what a user waits from `rlhf train` to the first step."""
    import ray

    started_at = time.time() if started_at is None else started_at

    from rlhf.evaluation.leakage import check_eval_data
    from rlhf.modes import build_runtime
    from rlhf.preflight import check_before_start, create_output_dir

    cfg.validate()
    check_before_start(cfg, resume)  # output folder, paths, reward functions, PEFT targets, rubric
    runtime = build_runtime(cfg)  # reads data and tokenizer: bad input fails before any actor
    check_eval_data(cfg)  # no evaluation row may be a training row
    create_output_dir(cfg)
    dump(cfg, os.path.join(cfg.trainer.output_dir, "config.yaml"))
    runtime.write_reports()
    started_ray = init_ray(cfg, runtime.group_names())
    try:
        with stop_on_signals(runtime):
            if pending_stop:
                logger.warning("a stop was requested while the run was starting: it ends after its first step")
                runtime.request_stop(pending_stop[0])
            runtime.start(resume=resume)
            return runtime.run(started_at)
    finally:
        runtime.shutdown()
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
    from rlhf.faults import PhaseFailed, TooManyBadSteps, TrainingRankDied
    from rlhf.summary import print_summary

    if not cfg.logging.verbose:
        from rlhf.quiet import install as quiet_library_noise

        quiet_library_noise()
    try:
        summary = run_training(cfg, resume=args.resume, started_at=process_started_at())
    except (DataError, ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (TrainingRankDied, TooManyBadSteps, PhaseFailed) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    print_summary(summary)
    if summary.get("evaluation", {}).get("gate") == "stopped":
        print("stopped by the forgetting gate (eval.on_general_drop=stop); best model within the limit: "
              f"{summary['evaluation']['best_model']}", flush=True)
        return 3
    if summary["stopped"]:
        print("stopped on request; resubmit with --resume to continue", flush=True)
        return 128 + summary["stop_signal"]  # 143 after SIGTERM, 130 after Ctrl-C
    return 0


if __name__ == "__main__":
    sys.exit(main())
