"""Per-step metrics to output_dir/metrics.jsonl and to W&B, plus the progress bar.

W&B is optional at every point: if it cannot start or log, training goes on and the
JSONL file stays the record. Without an API key it runs offline (sync later with
`wandb sync`). The run id is kept in output_dir so a resumed run continues the same run.
"""
from __future__ import annotations

import json
import logging
import math
import os
import secrets
from typing import Any, Optional

logger = logging.getLogger(__name__)


# What the progress bar shows, when a step has it: PPO's reward and KL, each mode's headline metric.
PROGRESS_KEYS = ("reward/mean", "kl/mean", "sft/loss", "rm/accuracy", "rewards/accuracy", "eval/win_rate",
                 "distill/divergence")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; null keeps the line parseable
    return value


class MetricsLogger:
    def __init__(self, output_dir: str, config_dict: dict, wandb_cfg, progress: bool, total_steps: int,
                 start_step: int = 0) -> None:
        self.output_dir = output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.jsonl_path = os.path.join(output_dir, "metrics.jsonl")
        self.samples_path = os.path.join(output_dir, "samples.jsonl")
        self._drop_steps_from(self.jsonl_path, start_step)
        self._drop_steps_from(self.samples_path, start_step)
        self.wandb = self._start_wandb(config_dict, wandb_cfg) if wandb_cfg.enabled else None
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            mode = config_dict.get("algorithm", {}).get("name", "ppo")
            self.bar = tqdm(total=total_steps, initial=start_step, desc=mode, unit="step", dynamic_ncols=True)

    @staticmethod
    def _drop_steps_from(path: str, start_step: int) -> None:
        """On resume, forget lines of steps that will be run again, so steps stay monotonic."""
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as fh:
            kept = [line for line in fh if line.strip() and json.loads(line).get("step", 0) <= start_step]
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(kept)

    def _start_wandb(self, config_dict: dict, cfg):
        try:
            import wandb

            mode = cfg.mode
            if mode == "auto":
                mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
            id_path = os.path.join(self.output_dir, "wandb_run_id.txt")
            run_id = open(id_path).read().strip() if os.path.exists(id_path) else secrets.token_hex(6)
            with open(id_path, "w") as fh:
                fh.write(run_id)
            return wandb.init(project=cfg.project, entity=cfg.entity, name=cfg.run_name, group=cfg.group,
                              id=run_id, resume="allow", mode=mode, dir=self.output_dir, config=config_dict)
        except Exception as err:  # W&B must never take training down
            logger.warning("W&B disabled: could not start (%s)", err)
            return None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: _finite_or_none(v) for k, v in metrics.items()}}
        with open(self.jsonl_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            try:
                self.wandb.log(metrics, step=step)
            except Exception as err:
                logger.warning("W&B log failed at step %d (%s); continuing", step, err)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{metrics[k]:.3f}" for k in PROGRESS_KEYS if isinstance(metrics.get(k), float)})

    def log_samples(self, step: int, prompts: list[str], responses: list[str], scores: list[float],
                    transcripts: Optional[list[list[dict]]] = None) -> None:
        """One JSON line per sample; multi-turn episodes add `turns`, the transcript with each turn's role."""
        rows = [{"step": step, "prompt": p, "response": r, "score": _finite_or_none(s)}
                for p, r, s in zip(prompts, responses, scores)]
        for row, turns in zip(rows, transcripts or []):
            row["turns"] = turns
        with open(self.samples_path, "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        if self.wandb is not None and rows:
            try:
                import wandb

                table = wandb.Table(columns=["prompt", "response", "score"],
                                    data=[[r["prompt"], r["response"], r["score"]] for r in rows])
                self.wandb.log({"samples": table}, step=step)
            except Exception as err:
                logger.warning("W&B sample log failed (%s)", err)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            try:
                self.wandb.finish()
            except Exception:
                pass


def read_metrics(output_dir: str) -> list[dict]:
    path = os.path.join(output_dir, "metrics.jsonl")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
