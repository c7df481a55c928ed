"""Start-up: seconds from `rlhf train` to the first step, as the run itself reports it (`timing/startup_s`).

    python -m bench.startup [--config configs/ppo_tiny.yaml] [--repeats 3] [--set key=value ...]

Each repeat is a fresh `rlhf train` process on its own local Ray, one step, no checkpoint and no
final save, so what is timed is what a user waits for: the interpreter and imports, config and data
checks, Ray, every actor's imports and model loads, DeepSpeed set-up and the engines. Prints each
repeat and the median; builds `.assets/tiny` when missing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from bench.rollout import ensure_assets


def one_run(config: str, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="startup-") as out:
        cmd = [sys.executable, "-m", "rlhf.cli", "train", config, "--set", f"trainer.output_dir={out}",
               "--set", "trainer.steps=1", "--set", "trainer.save_steps=0", "--set", "trainer.save_hf_model=false",
               "--set", "logging.progress=false", *[a for o in overrides for a in ("--set", o)]]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(out, "metrics.jsonl")) as fh:
            first = json.loads(fh.readline())
    return {"startup_s": first["timing/startup_s"], "step_s": first["timing/step_s"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ppo_tiny.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    args = parser.parse_args(argv)
    ensure_assets("tiny")
    runs = []
    for i in range(args.repeats):
        runs.append(one_run(args.config, args.overrides))
        print(f"repeat {i + 1}: start-up {runs[-1]['startup_s']:.1f} s, first step {runs[-1]['step_s']:.1f} s",
              flush=True)
    print(f"median start-up {statistics.median(r['startup_s'] for r in runs):.1f} s over {len(runs)} repeats "
          f"({args.config})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
