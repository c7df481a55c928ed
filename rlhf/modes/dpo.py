"""Direct preference optimisation on offline (prompt, chosen, rejected) pairs.

Two groups: the policy (trained, DeepSpeed) and the reference (frozen). The reference's summed
log-probs of every training and held-out pair are computed once at start-up and stored with the
pairs; the reference group is then released, its CPUs idle for the rest of the run. With
`algorithm.dpo.loss_type: simpo` no reference group starts at all, nor with a PEFT method (LoRA, IA3,
prompt or prefix tuning) and `model.lora.fold_reference`, where the reference is the policy with its
adapters disabled.
Metrics: `dpo/loss`, `rewards/chosen`, `rewards/rejected`, `rewards/accuracy`, `rewards/margin`
(implicit rewards β·(log π − log π_ref)); the same under `eval/` on the held-out pairs.

Departure from Rafailov et al. 2023: none in the loss (see `rlhf.losses.dpo`); reference log-probs
are summed over the response tokens exactly as the policy's are, with the same padding layout.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

from actors.frozen import ReferenceActor
from rlhf.config import Config
from rlhf.data.batching import collate_preferences, padded_preference_batch
from rlhf.data.examples import PreferenceExample, check_context, load_preference_examples, train_and_eval
from rlhf.data.prompts import PromptSampler, prompt_tokenizer
from rlhf.models.loading import context_limit
from rlhf.modes.runtime import (ModeDriver, ModeRuntime, evaluate_on, padded_size, reference_is_folded,
                                reference_logps, train_on)

logger = logging.getLogger(__name__)

# Pairs per reference forward call while precomputing (bounds the driver's tensor sizes).
PRECOMPUTE_CHUNK = 64


class DPODriver(ModeDriver):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.tokenizer = prompt_tokenizer(cfg.model.path, cfg.data, cfg.model.trust_remote_code)
        check_context(cfg.data, context_limit(cfg.model.path, cfg.model.trust_remote_code), cfg.model.virtual_tokens)
        self.train_pairs, self.eval_pairs, self.data_counts = train_and_eval(
            lambda path: load_preference_examples(path, self.tokenizer, cfg.data), cfg.data, cfg.trainer.seed)
        logger.info("dpo: %d training pairs, %d held-out pairs", len(self.train_pairs), len(self.eval_pairs or []))
        self.uses_reference = cfg.algorithm.dpo.uses_reference
        self.reference_folded = reference_is_folded(cfg)
        # The sampler walks pair indices, so each pair's stored reference log-probs come along.
        self.sampler = PromptSampler(list(range(len(self.train_pairs))), cfg.trainer.seed, cfg.data.shuffle)
        frozen = {"reference": (ReferenceActor, ())} if self.uses_reference and not self.reference_folded else {}
        self.runtime = ModeRuntime(cfg, "policy", frozen, self.data_counts)
        self.train_ref: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.eval_ref: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def start(self, resume: bool = False) -> None:
        super().start(resume)
        if self.uses_reference:
            self.train_ref = self._precompute(self.train_pairs)
            self.eval_ref = self._precompute(self.eval_pairs) if self.eval_pairs else None
            self.runtime.release("reference")

    def _precompute(self, pairs: list[PreferenceExample]) -> tuple[torch.Tensor, torch.Tensor]:
        group, method = ((self.runtime.groups["policy"], "forward_reference") if self.reference_folded
                         else (self.runtime.groups["reference"], "forward"))
        chosen, rejected = [], []
        for start in range(0, len(pairs), PRECOMPUTE_CHUNK):
            batch = collate_preferences(pairs[start:start + PRECOMPUTE_CHUNK], self.tokenizer.pad_token_id)
            c, r = reference_logps(group, batch, method)
            chosen.append(c)
            rejected.append(r)
        return torch.cat(chosen), torch.cat(rejected)

    def run(self) -> dict:
        keys = ["rewards/accuracy", "rewards/margin", "eval/rewards/accuracy", "eval/rewards/margin"]
        return self._run("dpo", self.train_step, self.evaluate if self.eval_pairs else None,
                         self.sampler.state_dict, self.sampler.load_state_dict, keys)

    def train_step(self, step: int) -> dict:
        # 1. The next pairs with their stored reference log-probs; 2. one DPO optimizer step.
        index = self.sampler.next_batch(self.cfg.trainer.mini_batch_size)
        ref = self.train_ref
        batch = collate_preferences([self.train_pairs[i] for i in index], self.tokenizer.pad_token_id,
                                    ref[0][index] if ref else None, ref[1][index] if ref else None)
        return train_on(self.runtime.groups["policy"], [batch])

    def evaluate(self) -> dict:
        size = padded_size(len(self.eval_pairs), self.cfg.ray.policy.replicas, self.cfg.trainer.micro_batch_size)
        ref = self.eval_ref
        batch = padded_preference_batch(self.eval_pairs, size, self.tokenizer.pad_token_id,
                                        ref[0] if ref else None, ref[1] if ref else None)
        return evaluate_on(self.runtime.groups["policy"], batch)
