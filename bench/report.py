"""Markdown for bench/compare.py: the comparison table, our phase breakdown, memory by process kind."""
from __future__ import annotations

import math


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


def phase_table(ours: dict) -> str:
    if "error" in ours or not ours.get("phases"):
        return ""
    rows = "\n".join(f"| {name} | {seconds:.3f} | {share:.0%} |" for name, seconds, share in ours["phases"])
    return f"\nOur step by phase (median, warm-up step excluded):\n\n| phase | seconds | share |\n|---|---|---|\n{rows}\n"


def memory_table(ours: dict, trl: dict) -> str:
    parts = []
    for side, r in (("ours", ours), ("TRL", trl)):
        if "error" in r or not r.get("by_name"):
            continue
        top = sorted(r["by_name"].items(), key=lambda kv: -kv[1])[:8]
        parts.append(f"{side}: " + ", ".join(f"{name} {mb:,.0f} MB" for name, mb in top))
    return ("\nRSS at the peak, by process kind: " + "; ".join(parts) + "\n") if parts else ""
