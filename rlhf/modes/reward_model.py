"""Reward-model training: Bradley-Terry on (prompt, chosen, rejected) pairs.

The trained model is a one-output sequence classifier (from `model.reward_path`, or from the
policy with a fresh scalar head) on the `reward` group. It is saved in Hugging Face format under
output_dir/final, which a PPO config loads as `model.reward_path` with `reward.source: model`.
Metrics: `rm/loss`, `rm/accuracy` (pairs ranked right), `rm/margin`; `eval/rm/...` held out.
"""
from __future__ import annotations

import logging

from rlhf.config import Config
from rlhf.data.batching import collate_preferences, padded_preference_batch
from rlhf.data.examples import check_context, load_preference_examples, train_and_eval
from rlhf.data.prompts import PromptSampler, prompt_tokenizer
from rlhf.models.loading import context_limit
from rlhf.modes.phases import evaluate_on, padded_size, train_on
from rlhf.modes.runtime import Runtime, StepOutput

logger = logging.getLogger(__name__)


class RewardModelMode:
    def __init__(self, cfg: Config, runtime: Runtime) -> None:
        self.cfg, self.runtime = cfg, runtime
        start = cfg.model.reward_path or cfg.model.path
        self.tokenizer = prompt_tokenizer(start, cfg.data, cfg.model.trust_remote_code)
        check_context(cfg.data, context_limit(start, cfg.model.trust_remote_code))
        self.train_pairs, self.eval_pairs, self.data_report = train_and_eval(
            lambda path: load_preference_examples(path, self.tokenizer, cfg.data), cfg.data, cfg.trainer.seed)
        logger.info("rm: %d training pairs, %d held-out pairs", len(self.train_pairs), len(self.eval_pairs or []))
        self.sampler = PromptSampler(self.train_pairs, cfg.trainer.seed, cfg.data.shuffle)

    def trained_roles(self) -> list[str]:
        return ["reward"]

    def frozen_groups(self) -> dict[str, tuple]:
        return {}

    @property
    def has_held_out(self) -> bool:
        return bool(self.eval_pairs)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def train_step(self, step: int) -> StepOutput:
        # 1. The next pairs; 2. one optimizer step over them on the reward-model replicas.
        pairs = self.sampler.next_batch(self.cfg.trainer.mini_batch_size)
        batch = collate_preferences(pairs, self.tokenizer.pad_token_id)
        return StepOutput(self.runtime.phase("train", lambda: train_on(self.runtime.groups["reward"], [batch])))

    def evaluate(self) -> dict:
        size = padded_size(len(self.eval_pairs), self.cfg.ray.reward.replicas, self.cfg.trainer.micro_batch_size)
        batch = padded_preference_batch(self.eval_pairs, size, self.tokenizer.pad_token_id)
        return self.runtime.phase("evaluate", lambda: evaluate_on(self.runtime.groups["reward"], batch))
