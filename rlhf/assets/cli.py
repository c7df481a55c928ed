"""The ``rlhf assets`` subcommand: build the tiny local assets into a folder.

``rlhf/cli.py`` registers it with ``add_assets_subcommand(subparsers)``; running this
module directly (``python -m rlhf.assets.cli --out DIR``) does the same without it.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from rlhf.assets.spec import DEFAULT_VOCAB_SIZE


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from rlhf.assets.spec import MODEL_SIZES

    parser.add_argument("--out", required=True, help="folder to write policy/, reward/, data/ and assets.json into")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and data (default: %(default)s)")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help="BPE vocabulary size (default: %(default)s)")
    parser.add_argument("--size", choices=sorted(MODEL_SIZES), default="tiny",
                        help="architecture preset; the flags below override single fields (default: %(default)s)")
    parser.add_argument("--hidden-size", type=int, help="hidden width")
    parser.add_argument("--layers", type=int, help="transformer layers")
    parser.add_argument("--heads", type=int,
                        help="attention heads; keep hidden-size/heads at 32 or 64 for vLLM on CPU")
    parser.add_argument("--kv-heads", type=int, help="key/value heads")
    parser.add_argument("--intermediate-size", type=int, help="MLP width")


def run_assets(args: argparse.Namespace) -> int:
    """Build the assets described by parsed ``args`` and print a short summary; returns 0."""
    from transformers.utils import logging as hf_logging

    from rlhf.assets.build import build_assets, load_manifest
    from rlhf.assets.spec import MODEL_SIZES

    # The per-shard progress bars of save_pretrained only clutter a one-screen summary.
    hf_logging.disable_progress_bar()
    overrides = {"hidden_size": args.hidden_size, "num_layers": args.layers, "num_heads": args.heads,
                 "num_kv_heads": args.kv_heads, "intermediate_size": args.intermediate_size}
    spec = dataclasses.replace(MODEL_SIZES[args.size], **{k: v for k, v in overrides.items() if v is not None})
    paths = build_assets(args.out, seed=args.seed, vocab_size=args.vocab_size, spec=spec)
    m = load_manifest(paths.root)
    print(f"assets built in {m['build_seconds']:.1f}s under {paths.root}")
    print(f"  vocab {m['vocab_size']}, hidden {spec.hidden_size}, layers {spec.num_layers}, "
          f"heads {spec.num_heads}/{spec.kv_heads} (head_dim {spec.head_dim})")
    print(f"  policy  {m['params']['policy']:>9,} params  {paths.policy}")
    print(f"  reward  {m['params']['reward']:>9,} params  {paths.reward}")
    if "teacher" in m["params"]:
        print(f"  teacher {m['params']['teacher']:>9,} params  {paths.teacher}")
    if "base" in m["params"]:
        print(f"  base    {m['params']['base']:>9,} params  {paths.base}  (pre-trained on the corpus, for general-ability probes)")
    rows = ", ".join(f"{name} {n}" for name, n in m["rows"].items())
    print(f"  data    {paths.data}  ({rows})")
    print(f"  manifest {paths.manifest}")
    return 0


def add_assets_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``assets`` on an ``ArgumentParser.add_subparsers()`` object.

    The parser gets ``func=run_assets`` as a default, so a dispatcher can call
    ``args.func(args)``; the new subparser is returned for further tweaks.
    """
    parser = subparsers.add_parser(
        "assets",
        help="build the tiny local tokenizer, models and datasets",
        description="Build a tiny tokenizer, random-init policy and reward models, and the task datasets.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_assets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m rlhf.assets.cli --out DIR``."""
    parser = argparse.ArgumentParser(prog="rlhf-assets", description="Build the tiny local assets.")
    _add_arguments(parser)
    return run_assets(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
