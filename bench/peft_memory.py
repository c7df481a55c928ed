"""Peak memory of one training step: full fine-tuning vs LoRA vs QLoRA on the same model.

    python -m bench.peft_memory [--size small] [--batch 8] [--seq 128] [--steps 3]

Each variant runs in its own process (peak RSS is per process): load the policy, wrap it as
the trainer does (`rlhf.models.adapters`), run `--steps` AdamW steps of a causal-LM loss on
random tokens, report peak RSS (getrusage), trainable parameters and seconds per step.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one_variant(path: str, variant: str, batch: int, seq: int, steps: int) -> dict:
    import torch

    from rlhf.config import LoraConfig
    from rlhf.models.adapters import apply_lora
    from rlhf.models.loading import load_causal_lm

    torch.manual_seed(0)
    quantization = "nf4" if variant == "qlora" else "none"
    model = load_causal_lm(path, quantization=quantization)
    if variant != "full":
        model = apply_lora(model, LoraConfig(rank=16, alpha=32), "CAUSAL_LM", quantized=quantization != "none")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    tokens = torch.randint(3, model.config.vocab_size, (batch, seq))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {"variant": variant, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "trainable_m": sum(p.numel() for p in params) / 1e6, "step_s": sorted(times)[len(times) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from bench.rollout import ensure_assets

    path = ensure_assets(args.size)
    if args.variant:
        print(json.dumps(one_variant(path, args.variant, args.batch, args.seq, args.steps)))
        return
    rows = []
    for variant in ("full", "lora", "qlora"):
        out = subprocess.run([sys.executable, "-m", "bench.peft_memory", "--size", args.size, "--batch",
                              str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
                              "--variant", variant], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\n{args.size} model, batch {args.batch} x {args.seq} tokens, AdamW, float32 compute:\n")
    print("| variant | trainable params (M) | peak RSS (MB) | step s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['trainable_m']:.2f} | {r['peak_rss_mb']:,.0f} | {r['step_s']:.2f} |")


if __name__ == "__main__":
    main()
