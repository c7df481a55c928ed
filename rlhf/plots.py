"""`rlhf plot OUTPUT_DIR`: training curves as PNG files from OUTPUT_DIR/metrics.jsonl.

Records are read strictly (a broken line names its file and line) except for a truncated last
line, which a run killed mid-write leaves behind: that one is skipped with a warning. The keys
are sorted into groups (reward, KL and its coefficient, losses, response length, held-out eval
metrics); each group with data becomes one PNG with one panel per key, since the keys of a group
live on different scales (KL vs its coefficient, a loss vs another). Reading and grouping are pure;
only `write_plots` touches matplotlib (the `plot` extra), with the Agg backend (no display needed).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Callable

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class PlotError(ValueError):
    """Bad input to `rlhf plot`; the message names the folder, file or line."""


@dataclass(frozen=True)
class Group:
    name: str
    """File stem of the PNG."""
    title: str
    takes: Callable[[str], bool]
    """Whether a metric key belongs to this group."""


def _train(key: str) -> bool:
    return not key.startswith("eval/")


# Order is the order of the files; a key lands in the first group that takes it.
GROUPS: tuple[Group, ...] = (
    Group("reward", "Reward", lambda k: _train(k) and k.startswith(("reward/", "rewards/")) and k != "reward/invalid"),
    Group("kl", "KL to the reference and its coefficient", lambda k: k.startswith("kl/")),
    Group("losses", "Losses", lambda k: _train(k) and k.endswith("/loss")),
    Group("response_length", "Response length (tokens)", lambda k: k.startswith("response_length/")),
    Group("eval", "Held-out evaluation", lambda k: k.startswith("eval/") and k != "eval/samples"),  # a count
)


@dataclass
class Series:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def read_records(output_dir: str) -> list[dict]:
    """The step records of OUTPUT_DIR/metrics.jsonl; a truncated last line is skipped with a warning."""
    if not os.path.isdir(output_dir):
        raise PlotError(f"{output_dir}: no such run folder")
    path = os.path.join(output_dir, METRICS_FILE)
    if not os.path.isfile(path):
        raise PlotError(f"{path}: no metrics file (is {output_dir} a run's trainer.output_dir?)")
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().split("\n")
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(numbered) - 1:  # the run was killed while writing its last line
                logger.warning("%s:%d: skipped a truncated last line (%s)", path, number, err)
                break
            raise PlotError(f"{path}:{number}: not valid JSON ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise PlotError(f"{path}:{number}: expected an object with an integer 'step', got {line[:80]!r}")
        records.append(record)
    if not records:
        raise PlotError(f"{path}: no step records to plot")
    return records


def group_series(records: list[dict]) -> dict[str, dict[str, Series]]:
    """group name -> metric key -> (steps, values), finite numbers only; groups and keys without data left out.

    A step logged again (a resumed run rewrites from its checkpoint) keeps its last value.
    """
    by_key: dict[str, dict[int, float]] = {}
    for record in records:
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                by_key.setdefault(key, {})[record["step"]] = float(value)
    grouped: dict[str, dict[str, Series]] = {}
    for key in sorted(by_key):
        group = next((g for g in GROUPS if g.takes(key)), None)
        if group is None:
            continue
        points = sorted(by_key[key].items())
        grouped.setdefault(group.name, {})[key] = Series([s for s, _ in points], [v for _, v in points])
    return {g.name: grouped[g.name] for g in GROUPS if g.name in grouped}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("rlhf plot needs matplotlib: pip install 'rlhf[plot]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def write_plots(grouped: dict[str, dict[str, Series]], out_dir: str, run_name: str = "") -> list[str]:
    """One PNG per group (one panel per key) under out_dir; returns the paths written."""
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    titles = {g.name: g.title for g in GROUPS}
    paths = []
    for name, series in grouped.items():
        fig, axes = plt.subplots(len(series), 1, figsize=(7, 2.4 * len(series) + 0.6), sharex=True, squeeze=False)
        for ax, (key, s) in zip(axes[:, 0], series.items()):
            ax.plot(s.steps, s.values, marker="o" if len(s.steps) < 30 else None, markersize=3, linewidth=1.5)
            ax.set_ylabel(key, fontsize=8)
            ax.grid(True, alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        fig.suptitle(f"{titles[name]}{f' - {run_name}' if run_name else ''}", fontsize=10)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{name}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_run(output_dir: str, out_dir: str | None = None) -> list[str]:
    """Read OUTPUT_DIR/metrics.jsonl and write its curves (default folder: OUTPUT_DIR/plots)."""
    grouped = group_series(read_records(output_dir))
    if not grouped:
        raise PlotError(f"{os.path.join(output_dir, METRICS_FILE)}: none of the plotted metric groups "
                        f"({', '.join(g.name for g in GROUPS)}) has data")
    name = os.path.basename(os.path.normpath(output_dir))
    return write_plots(grouped, out_dir or os.path.join(output_dir, "plots"), name)


def add_plot_subcommand(sub) -> None:
    plot = sub.add_parser("plot", help="write PNG training curves from a run's metrics.jsonl")
    plot.add_argument("output_dir", help="a run's trainer.output_dir (holds metrics.jsonl)")
    plot.add_argument("--out", default=None, help="folder for the PNG files (default: OUTPUT_DIR/plots)")
    plot.set_defaults(func=plot_command)


def plot_command(args) -> int:
    import sys

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        paths = plot_run(args.output_dir, args.out)
    except PlotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0
