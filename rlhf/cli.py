"""The `rlhf` command: `rlhf assets`, `rlhf train`, `rlhf pipeline`, `rlhf plot`, `rlhf eval`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf", description="Distributed RLHF on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    from rlhf.assets.cli import add_assets_subcommand

    add_assets_subcommand(sub)

    from rlhf.train import add_train_arguments, train_command

    train = sub.add_parser("train", help="run a training config")
    add_train_arguments(train, config_flag=False)
    train.set_defaults(func=train_command)

    from rlhf.pipeline.runner import add_pipeline_arguments, pipeline_command

    pipeline = sub.add_parser("pipeline", help="run a pipeline of stages (sft, rm, dpo, ppo, ...) in order")
    add_pipeline_arguments(pipeline, config_flag=False)
    pipeline.set_defaults(func=pipeline_command)

    from rlhf.plots import add_plot_subcommand

    add_plot_subcommand(sub)

    from rlhf.evaluation.report import add_eval_subcommand

    add_eval_subcommand(sub)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
