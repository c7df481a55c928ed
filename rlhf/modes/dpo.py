"""Direct preference optimisation on offline (prompt, chosen, rejected) pairs.

Two groups: the policy (trained, DeepSpeed) and the reference (frozen). The reference's summed
log-probs of every training and held-out pair are computed once at start-up and stored with the
pairs; the reference group is then released, its CPUs idle for the rest of the run. With
`algorithm.dpo.loss_type: simpo` no reference group starts at all, nor with a PEFT method (LoRA, IA3,
prompt or prefix tuning) and `model.lora.fold_reference`, where the reference is the policy with its
adapters disabled, nor with `ray.reference_in_policy`, where each policy replica computes them with a
copy of the reference that it drops once they are stored.
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
from actors.supervisor import get_fail_fast
from rlhf.config import Config
from rlhf.data.batching import collate_preferences, padded_preference_batch
from rlhf.data.examples import PreferenceExample, check_context, load_preference_examples, train_and_eval
from rlhf.data.prompts import PromptSampler, prompt_tokenizer
from rlhf.models.loading import context_limit
from rlhf.modes.phases import evaluate_on, padded_size, preference_reference_logps, train_on
from rlhf.modes.reference import mix_anchored_to_reference, reference_copy_in_policy, reference_served_by_policy
from rlhf.modes.runtime import Runtime, StepOutput

logger = logging.getLogger(__name__)

# Pairs per reference forward call while precomputing (bounds the driver's tensor sizes).
PRECOMPUTE_CHUNK = 64


class DPOMode:
    def __init__(self, cfg: Config, runtime: Runtime) -> None:
        self.cfg, self.runtime = cfg, runtime
        self.tokenizer = prompt_tokenizer(cfg.model.path, cfg.data, cfg.model.trust_remote_code)
        check_context(cfg.data, context_limit(cfg.model.path, cfg.model.trust_remote_code), cfg.model.virtual_tokens)
        self.train_pairs, self.eval_pairs, self.data_report = train_and_eval(
            lambda path: load_preference_examples(path, self.tokenizer, cfg.data), cfg.data, cfg.trainer.seed)
        logger.info("dpo: %d training pairs, %d held-out pairs", len(self.train_pairs), len(self.eval_pairs or []))
        self.uses_reference = cfg.algorithm.dpo.uses_reference
        self.reference_by_policy = reference_served_by_policy(cfg)
        # The sampler walks pair indices, so each pair's stored reference log-probs come along.
        self.sampler = PromptSampler(list(range(len(self.train_pairs))), cfg.trainer.seed, cfg.data.shuffle)
        self.train_ref: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.eval_ref: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.precomputed = False

    def trained_roles(self) -> list[str]:
        return ["policy"]

    def frozen_groups(self) -> dict[str, tuple]:
        return {"reference": (ReferenceActor, ())} if self.uses_reference and not self.reference_by_policy else {}

    @property
    def has_held_out(self) -> bool:
        return bool(self.eval_pairs)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def precompute_reference(self) -> None:
        """Every pair's reference log-probs, once; then the reference group is released."""
        if self.uses_reference and not self.precomputed:
            self.train_ref = self.runtime.phase("reference", lambda: self._precompute(self.train_pairs))
            if self.eval_pairs:
                self.eval_ref = self.runtime.phase("reference", lambda: self._precompute(self.eval_pairs))
            self.runtime.release("reference")
            if reference_copy_in_policy(self.cfg) and not mix_anchored_to_reference(self.cfg):
                get_fail_fast(self.runtime.groups["policy"].call("release_reference"))
        self.precomputed = True

    before_loop = precompute_reference

    def _precompute(self, pairs: list[PreferenceExample]) -> tuple[torch.Tensor, torch.Tensor]:
        groups = self.runtime.groups
        group, method = ((groups["policy"], "forward_reference") if self.reference_by_policy
                         else (groups["reference"], "forward"))
        chosen, rejected = [], []
        for start in range(0, len(pairs), PRECOMPUTE_CHUNK):
            batch = collate_preferences(pairs[start:start + PRECOMPUTE_CHUNK], self.tokenizer.pad_token_id)
            c, r = preference_reference_logps(group, batch, method)
            chosen.append(c)
            rejected.append(r)
        return torch.cat(chosen), torch.cat(rejected)

    def train_step(self, step: int) -> StepOutput:
        # 1. The next pairs with their stored reference log-probs; 2. one DPO optimizer step.
        index = self.sampler.next_batch(self.cfg.trainer.mini_batch_size)
        ref = self.train_ref
        batch = collate_preferences([self.train_pairs[i] for i in index], self.tokenizer.pad_token_id,
                                    ref[0][index] if ref else None, ref[1][index] if ref else None)
        return StepOutput(self.runtime.phase("train", lambda: train_on(self.runtime.groups["policy"], [batch])))

    def evaluate(self) -> dict:
        self.precompute_reference()  # `rlhf eval` evaluates without running the loop
        size = padded_size(len(self.eval_pairs), self.cfg.ray.policy.replicas, self.cfg.trainer.micro_batch_size)
        ref = self.eval_ref
        batch = padded_preference_batch(self.eval_pairs, size, self.tokenizer.pad_token_id,
                                        ref[0] if ref else None, ref[1] if ref else None)
        return self.runtime.phase("evaluate", lambda: evaluate_on(self.runtime.groups["policy"], batch))
