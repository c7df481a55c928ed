"""Shared by the TRL-side scripts (run with a TRL venv's python, see bench/setup_trl.sh).

Each script reads one JSON settings file written by bench/compare.py and writes one JSON result:
per-step end times, mean reward and completion tokens of each generation, and the load and train
seconds. The reward is always rlhf.tasks:letter_reward, the function our side scores with.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch

from rlhf.tasks import letter_reward


def read_settings() -> tuple[dict, str]:
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} SETTINGS.json RESULT.json")
    with open(sys.argv[1]) as fh:
        return json.load(fh), sys.argv[2]


def torch_dtype(settings: dict) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[settings["precision"]]


def read_prompts(path: str) -> list[str]:
    with open(path) as fh:
        return [json.loads(line)["prompt"] for line in fh if line.strip()]


class Recorder:
    """Collects what each generation scored and how long each step took."""

    def __init__(self) -> None:
        self.pending_scores: list[float] = []
        self.pending_tokens = 0
        self.steps: list[dict] = []
        self.train_start = 0.0

    def score(self, prompts: list[str], responses: list[str], token_counts: list[int]) -> list[float]:
        scores = letter_reward(prompts, responses)
        self.pending_scores += scores
        self.pending_tokens += sum(token_counts)
        return scores

    def end_step(self) -> None:
        n = len(self.pending_scores)
        self.steps.append({"end": time.perf_counter(), "samples": n, "tokens": self.pending_tokens,
                           "reward": sum(self.pending_scores) / n if n else float("nan")})
        self.pending_scores, self.pending_tokens = [], 0

    def callback(self, optimizer_steps_per_step: int = 1):
        from transformers import TrainerCallback

        recorder = self

        class StepTimes(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                recorder.train_start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step % optimizer_steps_per_step == 0:
                    recorder.end_step()

        return StepTimes()

    def write(self, path: str, load_s: float, extra: dict | None = None) -> None:
        result = {"load_s": load_s, "train_start": self.train_start, "steps": self.steps,
                  "torch_threads": torch.get_num_threads(), **(extra or {})}
        with open(path, "w") as fh:
            json.dump(result, fh, indent=1)


def common_training_args(settings: dict, output_dir: str) -> dict:
    """TrainingArguments fields every TRL side shares (CPU, no saving, no reporting, exact precision)."""
    return dict(
        output_dir=output_dir, use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
        learning_rate=settings["learning_rate"], lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, seed=settings["seed"], disable_tqdm=True,
        # TRL turns bf16 on by default: pin it to the row's precision on both sides.
        bf16=settings["precision"] == "bf16", fp16=False,
        dataloader_num_workers=0,
    )


def compile_models(settings: dict, *models) -> dict:
    """The row's `trl_compile` (`bench.compare --trl-compile`). `blocks`: each model's transformer blocks
    compiled in place the way our `trainer.compile` does it (the same function); `trainer`: the
    TrainingArguments switch, the HF Trainer compiling the whole trained model. Returns the extra
    TrainingArguments."""
    mode = settings.get("trl_compile", "off")
    if mode == "blocks":
        from rlhf.models.compile import compile_blocks

        for model in models:
            compile_blocks(model)
    return {"torch_compile": True} if mode == "trainer" else {}


def silence() -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")
