"""Where a PPO step's time goes: median seconds and share of each phase from a run's metrics.jsonl.

    python -m bench.phase_breakdown OUTPUT_DIR [--skip-first N]

The first steps include warm-up (first forward passes, allocator growth); skip them for a
steady-state picture.
"""
from __future__ import annotations

import argparse
import statistics

from rlhf.metrics import read_metrics

PHASES = ("generate", "experience", "train", "weight_sync")


def breakdown(rows: list[dict]) -> list[tuple[str, float, float]]:
    step = statistics.median(r["timing/step_s"] for r in rows)
    table = []
    for phase in PHASES:
        seconds = statistics.median(r[f"timing/{phase}_s"] for r in rows)
        table.append((phase, seconds, seconds / step))
    accounted = sum(t[1] for t in table)
    table.append(("other (driver: targets, logging, checkpoints)", max(step - accounted, 0.0),
                  max(step - accounted, 0.0) / step))
    table.append(("step", step, 1.0))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir")
    parser.add_argument("--skip-first", type=int, default=3)
    args = parser.parse_args()
    rows = read_metrics(args.output_dir)[args.skip_first:]
    if not rows:
        raise SystemExit(f"{args.output_dir}/metrics.jsonl has no steps after the first {args.skip_first}")
    print(f"{len(rows)} steps (first {args.skip_first} skipped), medians:")
    print(f"| phase | seconds | share |\n|---|---|---|")
    for phase, seconds, share in breakdown(rows):
        print(f"| {phase} | {seconds:.3f} | {share:.0%} |")
    tokens = statistics.median(r["throughput/tokens_per_s"] for r in rows)
    print(f"\ngenerated tokens/s over the whole step (median): {tokens:.0f}")


if __name__ == "__main__":
    main()
