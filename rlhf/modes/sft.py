"""Supervised fine-tuning on the policy group: loss only on response tokens, optional packing.

Each step takes `trainer.mini_batch_size` rows (an example each, or a packed row of several
when `data.packing`), split over the policy replicas; DeepSpeed accumulates micro-batches
into one optimizer step. Metric: `sft/loss` (token mean) in training, `eval/sft/loss` held out.
The steps themselves (`SFTSteps`) are shared with offline distillation, which fine-tunes the
student on the teacher's answers.
"""
from __future__ import annotations

import logging
import random
from typing import Optional

from actors.groups import ActorGroup
from rlhf.config import Config
from rlhf.data.batching import collate_sft, pack_examples, pad_sft_rows
from rlhf.data.examples import SFTExample, check_context, load_sft_examples, train_and_eval
from rlhf.data.prompts import PromptSampler, prompt_tokenizer
from rlhf.models.loading import context_limit
from rlhf.modes.phases import evaluate_on, padded_size, train_on
from rlhf.modes.runtime import Runtime, StepOutput

logger = logging.getLogger(__name__)


class SFTSteps:
    """SFT's rows, their sampler (checkpointed), one training step and one held-out evaluation on a policy group."""

    def __init__(self, cfg: Config, pad_token_id: int, train: list[SFTExample],
                 held_out: Optional[list[SFTExample]]) -> None:
        self.cfg = cfg
        self.pad_token_id = pad_token_id
        self.train_rows = self._rows(train, shuffle_seed=cfg.trainer.seed)
        self.eval_rows = self._rows(held_out) if held_out else None
        logger.info("sft: %d training rows (%d examples), %d held-out rows", len(self.train_rows), len(train),
                    len(self.eval_rows or []))
        # The sampler walks rows in reshuffled epochs; its position is checkpointed.
        self.sampler = PromptSampler(self.train_rows, cfg.trainer.seed, cfg.data.shuffle)

    def _rows(self, examples: list[SFTExample], shuffle_seed=None) -> list[list[SFTExample]]:
        if not self.cfg.data.packing:
            return [[ex] for ex in examples]
        if shuffle_seed is not None:  # mix examples across rows before packing, reproducibly
            examples = list(examples)
            random.Random(f"pack-{shuffle_seed}").shuffle(examples)
        return pack_examples(examples, self.cfg.data.max_prompt_tokens + self.cfg.data.max_response_tokens)

    def train_step(self, policy: ActorGroup) -> dict:
        # 1. The next rows; 2. one optimizer step over them on the policy replicas.
        rows = self.sampler.next_batch(self.cfg.trainer.mini_batch_size)
        batch = collate_sft(rows, self.pad_token_id)
        metrics = train_on(policy, [batch])
        metrics["sft/tokens"] = batch.weight()
        return metrics

    def evaluate(self, policy: ActorGroup) -> dict:
        size = padded_size(len(self.eval_rows), self.cfg.ray.policy.replicas, self.cfg.trainer.micro_batch_size)
        batch = collate_sft(pad_sft_rows(self.eval_rows, size), self.pad_token_id)
        return evaluate_on(policy, batch)


class SFTMode:
    def __init__(self, cfg: Config, runtime: Runtime) -> None:
        self.cfg, self.runtime = cfg, runtime
        data = cfg.data
        self.tokenizer = prompt_tokenizer(cfg.model.path, data, cfg.model.trust_remote_code)
        check_context(cfg.data, context_limit(cfg.model.path, cfg.model.trust_remote_code), cfg.model.virtual_tokens)
        train, held_out, self.data_report = train_and_eval(
            lambda path: load_sft_examples(path, self.tokenizer, data), data, cfg.trainer.seed)
        self.steps = SFTSteps(cfg, self.tokenizer.pad_token_id, train, held_out)

    def trained_roles(self) -> list[str]:
        return ["policy"]

    def frozen_groups(self) -> dict[str, tuple]:
        return {}

    @property
    def has_held_out(self) -> bool:
        return bool(self.steps.eval_rows)

    def state_dict(self) -> dict:
        return self.steps.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.steps.sampler.load_state_dict(state)

    def train_step(self, step: int) -> StepOutput:
        policy = self.runtime.groups["policy"]
        return StepOutput(self.runtime.phase("train", lambda: self.steps.train_step(policy)))

    def evaluate(self) -> dict:
        policy = self.runtime.groups["policy"]
        return self.runtime.phase("evaluate", lambda: self.steps.evaluate(policy))
