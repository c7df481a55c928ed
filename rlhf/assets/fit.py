"""The small training loop every built asset shares (judge, teacher, pretrained base)."""
from __future__ import annotations

import time
from typing import Callable

import torch


def fit_in_place(model: torch.nn.Module, batch_loss: Callable[[], torch.Tensor], steps: int, learning_rate: float,
                 warmup_steps: int, seed: int, tail: int = 20) -> dict:
    """AdamW with linear warm-up and decay, gradient clipping at 1, one thread, seeded.

    `batch_loss()` draws its own batch (from torch's RNG, forked and seeded here, or its own) and
    returns the loss. Returns {"seconds", "cpu_seconds", "final_loss"} (mean of the last `tail` steps).
    One thread: the assets must come out bit-identical on any machine, whatever its core count.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    losses = []
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: min(1.0, (s + 1) / warmup_steps) * (1 - s / steps))
            for _ in range(steps):
                loss = batch_loss()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    model.eval()
    last = losses[-tail:]
    return {"seconds": round(time.perf_counter() - start, 3), "cpu_seconds": round(time.process_time() - cpu_start, 3),
            "final_loss": round(sum(last) / len(last), 4)}
