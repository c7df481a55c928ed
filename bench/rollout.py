"""Rollout throughput of the vLLM and built-in engines, and the cost of an in-place weight push.

    python -m bench.rollout [--sizes tiny small] [--batches 16 128] [--new-tokens 64] [--repeats 3]

Builds `.assets/<size>` with `rlhf assets --size SIZE` when missing. Each engine generates
`batch` completions of up to `--new-tokens` tokens (one sample per prompt, temperature 1);
tokens/s counts generated tokens, median of `--repeats` runs after one warm-up run. Weight
sync loads the policy's full safetensors state dict into the running engine, as PPO does.
Both engines run in this process, one after the other, with every core.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
from safetensors.torch import save

from rlhf.data.prompts import ensure_chat_template
from rlhf.models.loading import load_causal_lm, load_tokenizer
from rlhf.rollout import SamplingSpec
from rlhf.rollout.select import count_parameters


def ensure_assets(size: str) -> str:
    root = os.path.join(".assets", size)
    if not os.path.exists(os.path.join(root, "assets.json")):
        subprocess.run([sys.executable, "-m", "rlhf.assets.cli", "--out", root, "--size", size], check=True)
    return os.path.join(root, "policy")


def prompt_ids(model_path: str, count: int) -> list[list[int]]:
    tok = load_tokenizer(model_path)
    ensure_chat_template(tok, None, model_path)
    letters = "abekst"
    texts = [f"Write the letter {letters[i % 6]} {i % 7 + 2} times, please." for i in range(count)]
    return [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True,
                                    return_dict=False) for t in texts]


def build(kind: str, model_path: str):
    if kind == "vllm":
        from rlhf.rollout.vllm_engine import VLLMEngine, VLLMSettings

        return VLLMEngine(model_path, VLLMSettings(kv_cache_memory_mb=1024))
    from rlhf.rollout.builtin import BuiltinEngine

    return BuiltinEngine(load_causal_lm(model_path), load_tokenizer(model_path))


def measure(engine, model_path: str, batches: list[int], new_tokens: int, repeats: int) -> dict:
    results = {}
    for batch in batches:
        ids = prompt_ids(model_path, batch)
        rates = []
        for run in range(repeats + 1):
            spec = SamplingSpec(n=1, max_new_tokens=new_tokens, seed=run)
            start = time.perf_counter()
            generations = engine.generate(ids, spec)
            seconds = time.perf_counter() - start
            if run:  # the first run warms up allocators and kernels
                rates.append(sum(len(g.token_ids) for g in generations) / seconds)
        results[batch] = statistics.median(rates)
    model = load_causal_lm(model_path)
    blob = save({k: v.contiguous() for k, v in model.state_dict().items()})
    pushes = []
    for version in range(1, repeats + 1):
        start = time.perf_counter()
        engine.load_weights(blob, version)
        pushes.append(time.perf_counter() - start)
    results["sync_ms_per_mb"] = 1000 * statistics.median(pushes) / (len(blob) / 2**20)
    results["sync_mb"] = len(blob) / 2**20
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    parser.add_argument("--engines", nargs="+", default=["builtin", "vllm"])
    parser.add_argument("--batches", nargs="+", type=int, default=[16, 128])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for size in args.sizes:
        path = ensure_assets(size)
        params = count_parameters(path)
        for kind in args.engines:
            start = time.perf_counter()
            engine = build(kind, path)
            startup = time.perf_counter() - start
            result = measure(engine, path, args.batches, args.new_tokens, args.repeats)
            rows.append((size, params, kind, startup, result))
            del engine
            print(f"done: {size} {kind}", file=sys.stderr, flush=True)
    batch_cols = " | ".join(f"tokens/s, batch {b}" for b in args.batches)
    print(f"\n| model | engine | start-up s | {batch_cols} | weight sync ms/MB (MB) |")
    print("|---|---|---|" + "---|" * len(args.batches) + "---|")
    for size, params, kind, startup, r in rows:
        rates = " | ".join(f"{r[b]:,.0f}" for b in args.batches)
        print(f"| {size} ({params / 1e6:.1f}M) | {kind} | {startup:.1f} | {rates} | "
              f"{r['sync_ms_per_mb']:.1f} ({r['sync_mb']:.1f}) |")


if __name__ == "__main__":
    main()
