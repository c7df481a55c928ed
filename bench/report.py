"""Markdown for bench/compare.py: the comparison table, our phase breakdown, memory by process kind."""
from __future__ import annotations

import math
from typing import Optional


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def comparison_table(label: str, samples_per_step: int, ours: dict, trl: dict) -> str:
    head = ("| row | side | samples/s | best-step samples/s | tokens/s | step s | wall s (incl. start-up) | peak RSS sum GiB | "
            "peak PSS GiB | processes | reward first → last |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for side, r in (("ours", ours), ("TRL", trl)):
        if "error" in r:
            lines.append(f"| {label} | {side} | {r['error']} | | | | | | | | |")
            continue
        lines.append(
            f"| {label} | {side} | {_fmt(r['samples_per_s'], 2)} | {_fmt(r.get('best_samples_per_s'), 2)} | "
            f"{_fmt(r['tokens_per_s'], 0)} | "
            f"{_fmt(r['step_s'], 2)} | {_fmt(r['wall_s'], 0)} | {_fmt(r['rss_gb'], 2)} | {_fmt(r['pss_gb'], 2)} | "
            f"{r['processes']} | {r['reward_start']:.3f} → {r['reward_end']:.3f} |")
    if "error" not in ours and "error" not in trl:
        ratio = ours["samples_per_s"] / trl["samples_per_s"]
        best = ours.get("best_samples_per_s", math.nan) / trl.get("best_samples_per_s", math.nan)
        lines.append(f"| {label} | **ours / TRL** | **{ratio:.2f}×** | {best:.2f}× | "
                     f"{ours['tokens_per_s'] / trl['tokens_per_s']:.2f}× | "
                     f"| {ours['wall_s'] / trl['wall_s']:.2f}× | {ours['rss_gb'] / trl['rss_gb']:.2f}× | "
                     f"{ours['pss_gb'] / trl['pss_gb']:.2f}× | | |")
    return head + "\n".join(lines) + "\n"


def phase_table(ours: dict, peak_gflops: Optional[dict[str, float]] = None, precision: str = "fp32") -> str:
    """Seconds and share of each phase; with the measured matmul peaks, also each phase's useful GFLOP,
    achieved GFLOP/s and share of the peak of the run's precision (bench/flops.py counts the work)."""
    if "error" in ours or not ours.get("phases"):
        return ""
    work, peak = ours.get("phase_gflop") or {}, (peak_gflops or {}).get(precision)
    head = "| phase | seconds | share |"
    if work and peak:
        head += f" GFLOP per step | GFLOP/s | share of the {precision} matmul peak |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, seconds, share in ours["phases"]:
        line = f"| {name} | {seconds:.3f} | {share:.0%} |"
        if work and peak:
            gflop = work.get(name)
            line += (f" {gflop:.2f} | {gflop / seconds:.1f} | {gflop / seconds / peak:.1%} |" if gflop is not None
                     and seconds > 0 else " | | |")
        lines.append(line)
    text = "\nOur step by phase (median, warm-up step excluded):\n\n" + "\n".join(lines) + "\n"
    if peak_gflops:
        text += ("\nMatmul peak measured on this machine (1024² `F.linear`, all threads): "
                 + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in peak_gflops.items()) + ".\n")
    return text


def memory_table(ours: dict, trl: dict) -> str:
    parts = []
    for side, r in (("ours", ours), ("TRL", trl)):
        if "error" in r or not r.get("by_name"):
            continue
        top = sorted(r["by_name"].items(), key=lambda kv: -kv[1])[:8]
        parts.append(f"{side}: " + ", ".join(f"{name} {mb:,.0f} MB" for name, mb in top))
    return ("\nRSS at the peak, by process kind: " + "; ".join(parts) + "\n") if parts else ""
