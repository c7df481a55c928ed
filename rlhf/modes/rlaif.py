"""RLAIF as online DPO: the policy's own samples, ranked by AI feedback, become DPO pairs.

Groups: policy (trained), reference (frozen start policy; none for simpo, nor with LoRA and
`model.lora.fold_reference`: the policy with adapters disabled), reward (whatever
`reward.source` names: an AI judge, a reward model, a function) and rollout (engines that get
the policy's weights after every update, through PPO's push path).

Each step: sample `rollout.samples_per_prompt` responses for `trainer.prompts_per_step` prompts,
score them, pair the best against the worst of each prompt (`rlhf.pairs`), take DPO steps on
those pairs (mini-batches of `trainer.mini_batch_size`), push the new weights to the engines.
Held-out metric: `eval/win_rate`, how often the current policy's answer to a held-out prompt
scores above the starting policy's answer to it. Both answers are sampled with the same seed,
so at step 0 they are identical (win-rate 0.5) and later differences come from the weights.

Departures from OAIF (Guo et al. 2024): the judge scores each sample on its own (any reward
source can), rather than comparing two samples in one prompt; the pair is the best and the
worst of n samples, not two random ones; the reference is the frozen starting policy.
Pairs are padded (weight 0) to whole mini-batches so every replica takes the same steps.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Optional

import torch

from actors.frozen import ReferenceActor, RewardActor
from actors.rollout import RolloutActor
from rlhf.config import Config
from rlhf.data.batching import padded_preference_batch
from rlhf.data.examples import PreferenceExample, train_and_eval
from rlhf.data.prompts import Prompt, PromptSampler, load_prompts, prompt_tokenizer
from rlhf.models.loading import context_limit
from rlhf.modes.runtime import (ModeDriver, ModeRuntime, generate_rollout, padded_size, push_policy_weights,
                                reference_is_folded, reference_logps, score_rollout, train_on)
from rlhf.pairs import best_worst_pairs, win_rate
from rlhf.records import RolloutBatch
from rlhf.rollout.select import choose_engine

logger = logging.getLogger(__name__)

# Held-out sampling uses its own seed, apart from every training step's.
EVAL_SEED = 7_777_777


def pairs_from_rollout(rollout: RolloutBatch, prompts: list[Prompt], scores: torch.Tensor,
                       group_size: int) -> list[PreferenceExample]:
    """(best, worst) of each prompt's samples as preference examples; pairs with an empty response are left out."""
    def response(i: int) -> list[int]:
        return rollout.sequences[i, rollout.prompt_len:][rollout.response_mask[i].bool()].tolist()

    examples = []
    for chosen, rejected in best_worst_pairs(scores, group_size):
        prompt = prompts[chosen // group_size]
        chosen_ids, rejected_ids = response(chosen), response(rejected)
        if chosen_ids and rejected_ids:
            examples.append(PreferenceExample(prompt.row, prompt.text, prompt.token_ids, chosen_ids, rejected_ids))
    return examples


class RLAIFDriver(ModeDriver):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        data = cfg.data
        self.tokenizer = prompt_tokenizer(cfg.model.path, data, cfg.model.trust_remote_code)
        limit = context_limit(cfg.model.path, cfg.model.trust_remote_code)
        self.train_prompts, self.eval_prompts, self.data_counts = train_and_eval(
            lambda path: load_prompts(path, self.tokenizer, data.prompt_key, data.max_prompt_tokens, data.on_oversize,
                                      data.on_bad_row, data.apply_chat_template, context_limit=limit,
                                      max_new_tokens=cfg.rollout.max_new_tokens), data, cfg.trainer.seed)
        self.sampler = PromptSampler(self.train_prompts, cfg.trainer.seed, data.shuffle)
        self.uses_reference = cfg.algorithm.dpo.uses_reference
        self.engine = choose_engine(cfg.rollout.engine, cfg.model.path, cfg.ray.rollout.num_gpus)
        logger.info("rollout engine: %s (%s)", self.engine.name, self.engine.reason)
        self.reference_folded = reference_is_folded(cfg)
        frozen = {"reference": (ReferenceActor, ())} if self.uses_reference and not self.reference_folded else {}
        self.runtime = ModeRuntime(cfg, "policy", {**frozen, "reward": (RewardActor, ()),
                                                   "rollout": (RolloutActor, (self.engine.name, False))},
                                   self.data_counts)
        self.baseline_scores: Optional[list[float]] = None
        """The starting policy's held-out scores, the other side of every win-rate."""

    def run(self) -> dict:
        return self._run("rlaif", self.train_step, self.evaluate if self.eval_prompts else None,
                         self.state_dict, self.load_state_dict, ["reward/mean", "eval/win_rate", "eval/reward/mean"])

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "baseline_scores": self.baseline_scores}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.baseline_scores = state["baseline_scores"]
        # The engines started from the base weights: give them the restored policy.
        push_policy_weights(self.runtime.groups["policy"], self.runtime.groups["rollout"], self.runtime.step)

    def train_step(self, step: int) -> dict:
        cfg, groups, timings = self.cfg, self.runtime.groups, {}
        n = cfg.rollout.samples_per_prompt
        # 1. Prompts, and n samples of each from the engines (which hold the current policy).
        prompts = self.sampler.next_batch(cfg.trainer.prompts_per_step)
        start = time.perf_counter()
        rollout = generate_rollout(cfg, groups["rollout"], self.tokenizer, prompts, n,
                                   seed=cfg.trainer.seed * 1_000_003 + step, policy_version=step - 1)
        timings["generate"] = time.perf_counter() - start
        # 2. AI feedback: one score per sample from the reward source.
        start = time.perf_counter()
        scores = score_rollout(groups["reward"], rollout)
        timings["judge"] = time.perf_counter() - start
        # 3. Best against worst of each prompt.
        pairs = pairs_from_rollout(rollout, prompts, scores, n)
        train_metrics: dict = {}
        start = time.perf_counter()
        if pairs:
            # 4. DPO steps on the fresh pairs (padded to whole mini-batches; padding weighs 0).
            size = padded_size(len(pairs), 1, cfg.trainer.mini_batch_size)
            batch = padded_preference_batch(pairs, size, self.tokenizer.pad_token_id)
            if self.reference_folded:  # the policy with its adapters disabled is the starting policy
                batch.ref_chosen_logps, batch.ref_rejected_logps = reference_logps(groups["policy"], batch,
                                                                                   "forward_reference")
            elif self.uses_reference:
                batch.ref_chosen_logps, batch.ref_rejected_logps = reference_logps(groups["reference"], batch)
            mini = cfg.trainer.mini_batch_size
            train_metrics = train_on(groups["policy"], [batch.select(slice(i, i + mini)) for i in range(0, size, mini)])
            timings["train"] = time.perf_counter() - start
            # 5. The new weights into the engines.
            start = time.perf_counter()
            train_metrics["weight_sync/megabytes"] = push_policy_weights(groups["policy"], groups["rollout"],
                                                                         version=step) / 2**20
            timings["weight_sync"] = time.perf_counter() - start
        # 6. Metrics.
        finite = scores[torch.isfinite(scores)]
        lengths = rollout.response_mask.sum(dim=1)
        return {
            "reward/mean": float(finite.mean()) if len(finite) else float("nan"),
            "reward/std": float(finite.std()) if len(finite) > 1 else 0.0,
            "reward/invalid": int((~torch.isfinite(scores)).sum()),
            "rlaif/pairs": len(pairs),
            "response_length/mean": float(lengths.float().mean()),
            "train/skipped_update": 0 if pairs else 1,
            **train_metrics,
            **{f"timing/{k}_s": v for k, v in timings.items()},
        }

    def evaluate(self) -> dict:
        """One sample per held-out prompt from the current weights, scored against the start's samples."""
        rollout = generate_rollout(self.cfg, self.runtime.groups["rollout"], self.tokenizer, self.eval_prompts, 1,
                                   seed=EVAL_SEED + self.cfg.trainer.seed, policy_version=self.runtime.step)
        scores = score_rollout(self.runtime.groups["reward"], rollout).tolist()
        if self.baseline_scores is None:
            self.baseline_scores = scores
        finite = [s for s in scores if math.isfinite(s)]
        return {
            "eval/win_rate": win_rate(scores, self.baseline_scores),
            "eval/reward/mean": sum(finite) / len(finite) if finite else float("nan"),
        }
