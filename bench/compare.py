"""Our system against TRL on identical settings: speed, memory and learning, side by side.

    python -m bench.compare --algo grpo|ppo|dpo --size tiny|small [--precision fp32|bf16]
                            [--steps N] [--repeats R] [--sides ours trl] [--no-append]

Each repeat runs our `rlhf train` (generated config, local Ray, in a subprocess) and then TRL's
trainer (bench/trl_<algo>.py with the TRL venv's python: bench/setup_trl.sh builds it) on the
same model files (.assets/<size>, built when missing), prompts, batch shape, learning rate,
steps, precision and reward function (rlhf.tasks:letter_reward). Speed is the median step time
after the first (warm-up) step, median over repeats; memory is the peak over the whole process
tree (Ray actors included); reward is the mean of the last three steps. Prints a markdown table
and appends it, with the command, to bench/results.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

from actors.common import SHORT_SPIN_THREAD_ENV, THREAD_ENV_DEFAULTS
from typing import Optional

import torch
import yaml

from bench.flops import matmul_peak_gflops, ppo_phase_flops, shape_of_path
from bench.phase_breakdown import breakdown
from bench.proctree import TreeRun, load_average, run_tree
from bench.rollout import ensure_assets
from bench.settings import ALGOS, PRECISIONS, SIZES, BenchSettings, make_settings, ours_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRL_VENV = {"grpo": "trl-1.16", "dpo": "trl-1.16", "ppo": "trl-1.12"}
RESULTS = os.path.join(REPO, "bench", "results.md")


@dataclass
class SideResult:
    """One run of one side: per-step durations, samples, tokens and rewards, plus the tree's numbers."""
    side: str
    step_s: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    tree: Optional[TreeRun] = None
    phases: list[tuple[str, float, float]] = field(default_factory=list)
    phase_gflop: dict[str, float] = field(default_factory=dict)
    """Useful GFLOP per step of each phase (bench/flops.py), ours only."""
    error: Optional[str] = None

    def steady(self) -> slice:
        return slice(1, None) if len(self.step_s) > 1 else slice(0, None)  # the first step warms up

    @property
    def samples_per_s(self) -> float:
        s = self.steady()
        return statistics.median(n / t for n, t in zip(self.samples[s], self.step_s[s]))

    @property
    def tokens_per_s(self) -> float:
        s = self.steady()
        return statistics.median(n / t for n, t in zip(self.tokens[s], self.step_s[s]))

    @property
    def best_samples_per_s(self) -> float:
        """The fastest steady step: on a shared machine, the one least slowed by other jobs."""
        s = self.steady()
        return max(n / t for n, t in zip(self.samples[s], self.step_s[s]))

    @property
    def final_reward(self) -> float:
        return statistics.fmean(self.rewards[-3:]) if self.rewards else float("nan")


def side_env(side: str = "ours") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled", TRL_EXPERIMENTAL_SILENCE="1",
               HF_HUB_OFFLINE="1")
    # Ray starts its workers at niceness 15 by default; the TRL side runs at the caller's, so on a
    # machine with any other load the comparison would favour TRL by scheduler priority alone.
    env.setdefault("RAY_worker_niceness", "0")
    # Both sides get the thread environment our actors start with (actors/common.py): with
    # OpenMP's default spinning, any other process on the machine slowed a 2-thread TRL step up to
    # 10x, which would make the ratio measure the background load rather than the frameworks.
    for key, value in THREAD_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    if side == "trl":
        # TRL's one process trains and generates alone on every core, as our trained groups and in-process
        # engines do; they spin their threads for 0.2 ms before sleeping (actors/common.py), so TRL does too.
        for key, value in SHORT_SPIN_THREAD_ENV.items():
            env.setdefault(key, value)
    return env


def run_ours(s: BenchSettings, work: str, timeout_s: float, overrides: list[str]) -> SideResult:
    from rlhf.metrics import read_metrics

    result = SideResult("ours")
    out = os.path.join(work, "ours")
    config_path = os.path.join(work, "ours.yaml")
    with open(config_path, "w") as fh:
        yaml.safe_dump(ours_config(s, out, os.cpu_count() or 1), fh, sort_keys=False)
    cmd = [sys.executable, "-m", "rlhf.cli", "train", config_path]
    for item in overrides:
        cmd += ["--set", item]
    result.tree = run_tree(cmd, side_env(), os.path.join(work, "ours.log"), timeout_s)
    rows = read_metrics(out) if os.path.exists(os.path.join(out, "metrics.jsonl")) else []
    if result.tree.returncode != 0 or len(rows) < s.steps:
        result.error = f"exit {result.tree.returncode}, {len(rows)} steps; log: {work}/ours.log"
        return result
    result.step_s = [r["timing/step_s"] for r in rows]
    result.samples = [s.samples_per_step] * len(rows)
    result.tokens = [r.get("response_length/mean", float("nan")) * s.samples_per_step for r in rows]
    result.rewards = [_reward_of(r) for r in rows]
    try:
        result.phases = breakdown(rows[1:] if len(rows) > 1 else rows)
    except KeyError:  # a mode without the generate/experience/train/sync phases
        result.phases = []
    if result.phases:
        result.phase_gflop = phase_gflop(s, rows[result.steady()])
    return result


def phase_gflop(s: BenchSettings, rows: list[dict]) -> dict[str, float]:
    """GFLOP of each phase of a median step of ours, from the logged sequence and response lengths."""
    flops = ppo_phase_flops(
        shape_of_path(s.model_path), s.samples_per_step,
        sequence_len=statistics.median(r["sequence_length/mean"] for r in rows),
        response_len=statistics.median(r["response_length/mean"] for r in rows),
        epochs=s.ppo_epochs, with_critic=s.algo == "ppo",
        policy_recomputes="rollout/logprob_abs_diff" in rows[0])  # logged only when the policy recomputes
    return {name: value / 1e9 for name, value in {**flops, "step": sum(flops.values())}.items()}


def _reward_of(row: dict) -> float:
    """The step's reward; for DPO, the preference accuracy (chosen scored above rejected)."""
    for key in ("reward/mean", "rewards/accuracy", "rewards/accuracies"):  # ours, ours (DPO), TRL (DPO)
        if key in row:
            return row[key]
    return float("nan")


def run_trl(s: BenchSettings, work: str, timeout_s: float) -> SideResult:
    result = SideResult("trl")
    python = os.path.join(REPO, "bench", ".venvs", TRL_VENV[s.algo], "bin", "python")
    if not os.path.exists(python):
        result.error = f"no TRL venv at {os.path.dirname(os.path.dirname(python))}: run bash bench/setup_trl.sh"
        return result
    settings_path, result_path = os.path.join(work, "trl_settings.json"), os.path.join(work, "trl_result.json")
    with open(settings_path, "w") as fh:
        json.dump(s.to_json(), fh, indent=1)
    cmd = [python, "-m", f"bench.trl_{s.algo}", settings_path, result_path]
    result.tree = run_tree(cmd, side_env("trl"), os.path.join(work, "trl.log"), timeout_s)
    if result.tree.returncode != 0 or not os.path.exists(result_path):
        result.error = f"exit {result.tree.returncode}; log: {work}/trl.log"
        return result
    with open(result_path) as fh:
        data = json.load(fh)
    ends = [data["train_start"]] + [step["end"] for step in data["steps"]]
    result.step_s = [b - a for a, b in zip(ends, ends[1:])]
    result.samples = [step["samples"] for step in data["steps"]]
    result.tokens = [step["tokens"] for step in data["steps"]]
    result.rewards = [step["reward"] for step in data["steps"]]
    if len(result.step_s) < s.steps:
        result.error = f"{len(result.step_s)} of {s.steps} steps recorded; log: {work}/trl.log"
    return result


def merge(runs: list[SideResult]) -> dict:
    """Medians over repeats of what the table shows."""
    good = [r for r in runs if not r.error]
    if not good:
        return {"error": runs[0].error if runs else "not run"}
    med = statistics.median
    return {
        "samples_per_s": med(r.samples_per_s for r in good),
        "tokens_per_s": med(r.tokens_per_s for r in good),
        "best_samples_per_s": max(r.best_samples_per_s for r in good),
        "step_s": med(statistics.median(r.step_s[r.steady()]) for r in good),
        "wall_s": med(r.tree.wall_s for r in good),
        "rss_gb": med(r.tree.peak_rss_mb for r in good) / 1024,
        "pss_gb": med(r.tree.peak_pss_mb for r in good) / 1024,
        "processes": max(r.tree.peak_processes for r in good),
        "reward_start": med(r.rewards[0] for r in good),
        "reward_end": med(r.final_reward for r in good),
        "runs": len(good),
        "phases": good[len(good) // 2].phases,
        "phase_gflop": good[len(good) // 2].phase_gflop,
        "by_name": good[len(good) // 2].tree.peak_by_name_mb,
    }


def main(argv: Optional[list[str]] = None) -> int:
    from bench.report import comparison_table, memory_table, phase_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=ALGOS, required=True)
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", nargs="+", choices=("ours", "trl"), default=["ours", "trl"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra `rlhf train --set` for our side (e.g. ray.policy.replicas=2)")
    parser.add_argument("--trl-compile", choices=("off", "blocks", "trainer"), default="off",
                        help="TRL's side compiled: its blocks as our trainer.compile does, or by the HF Trainer")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per side per repeat")
    parser.add_argument("--work-dir", help="keep configs, logs and outputs here (default: a temporary folder)")
    parser.add_argument("--no-append", action="store_true", help=f"do not append to {RESULTS}")
    args = parser.parse_args(argv)
    command = "python -m bench.compare " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    ensure_assets(args.size)
    assets_root = os.path.join(REPO, ".assets", args.size)
    work_root = args.work_dir or tempfile.mkdtemp(prefix=f"bench_{args.algo}_{args.size}_")
    # The ceiling the phases are measured against, on this machine, before anything else runs.
    peak = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    load_before = load_average()
    runs: dict[str, list[SideResult]] = {"ours": [], "trl": []}
    unavailable: set[str] = set()  # a side that cannot run here (TRL without its venv) is tried once
    for repeat in range(args.repeats):
        for side in args.sides:
            if side in unavailable:
                continue
            work = os.path.join(work_root, f"r{repeat}")
            os.makedirs(work, exist_ok=True)
            s = make_settings(args.algo, args.size, args.precision, args.steps, assets_root, work)
            s.trl_compile = args.trl_compile
            started = time.perf_counter()
            run = run_ours(s, work, args.timeout, args.overrides) if side == "ours" else run_trl(s, work, args.timeout)
            runs[side].append(run)
            note = run.error or f"{run.samples_per_s:.2f} samples/s, reward {run.final_reward:.3f}"
            print(f"[repeat {repeat + 1}/{args.repeats}] {side}: {note} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
            if run.error and run.error.startswith("no TRL venv"):
                unavailable.add(side)
    ours = merge(runs["ours"]) if "ours" in args.sides else {"error": "not run"}
    trl = merge(runs["trl"]) if "trl" in args.sides else {"error": "not run"}
    label = f"{args.algo} {args.size} {args.precision}"
    s = make_settings(args.algo, args.size, args.precision, args.steps, assets_root, work_root)
    shape = (f"{s.prompts_per_step} prompts × {s.samples_per_prompt} samples, {s.max_new_tokens} new tokens max, "
             f"mini-batch {s.mini_batch_size}, micro-batch {s.micro_batch_size}, {s.ppo_epochs} epoch(s), "
             f"lr {s.learning_rate:g}, {args.steps} steps, {args.repeats} repeat(s)")
    if args.algo == "dpo":
        shape = (f"{s.prompts_per_step} pairs per step, micro-batch {s.micro_batch_size}, beta {s.dpo_beta}, "
                 f"lr {s.learning_rate:g}, {args.steps} steps, {args.repeats} repeat(s)")
    text = (f"\n### {label}\n\n`{command}`{' (our side: ' + ', '.join(args.overrides) + ')' if args.overrides else ''}\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M')}, {shape}; load average (1/5 min) {load_before} before, "
            f"{load_average()} after on {os.cpu_count()} cores; both sides with "
            + ", ".join(f"{k}={side_env()[k]}" for k in (*THREAD_ENV_DEFAULTS, "RAY_worker_niceness"))
            + "; TRL's process and our multi-threaded trained groups and in-process engines with "
            + ", ".join(f"{k}={v}" for k, v in SHORT_SPIN_THREAD_ENV.items()) + ".\n\n"
            + comparison_table(label, s.samples_per_step, ours, trl) + phase_table(ours, peak, args.precision)
            + memory_table(ours, trl))
    pairs = [(o, t) for o, t in zip(runs["ours"], runs["trl"]) if not o.error and not t.error]
    if len(pairs) > 1:
        # On a shared machine the load drifts between repeats; each pair ran back to back.
        text += ("\nours / TRL samples/s per repeat (each pair ran back to back): "
                 + ", ".join(f"{o.samples_per_s / t.samples_per_s:.2f}×" for o, t in pairs) + "\n")
    print(text)
    if not args.no_append:
        with open(RESULTS, "a") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
