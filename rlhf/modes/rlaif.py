"""RLAIF as online DPO: the policy's own samples, ranked by AI feedback, become DPO pairs.

Groups: policy (trained), reference (frozen start policy; none for simpo, nor with LoRA and
`model.lora.fold_reference`: the policy with adapters disabled, nor with `ray.reference_in_policy`:
each policy replica holds a copy), reward (whatever
`reward.source` names: an AI judge, a reward model, a function) and rollout (engines that get
the policy's weights after every update, through the shared weight push).

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

from actors.frozen import ReferenceActor
from actors.reward import RewardActor
from actors.rollout import RolloutActor
from rlhf.config import Config
from rlhf.data.batching import padded_preference_batch
from rlhf.data.examples import PreferenceExample, train_and_eval
from rlhf.data.prompts import Prompt, PromptSampler, load_prompts, prompt_tokenizer
from rlhf.evaluation.task_reward import TaskReward
from rlhf.models.loading import context_limit
from rlhf.modes import phases
from rlhf.modes.reference import reference_served_by_policy
from rlhf.modes.runtime import Runtime, StepOutput
from rlhf.pairs import best_worst_pairs, win_rate
from rlhf.records import RolloutBatch
from rlhf.rollout.select import choose_engine
from rlhf.seeds import eval_seed, step_seed

logger = logging.getLogger(__name__)


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


class RLAIFMode:
    def __init__(self, cfg: Config, runtime: Runtime) -> None:
        self.cfg, self.runtime = cfg, runtime
        data = cfg.data
        self.tokenizer = prompt_tokenizer(cfg.model.path, data, cfg.model.trust_remote_code)
        limit = context_limit(cfg.model.path, cfg.model.trust_remote_code)
        self.train_prompts, self.eval_prompts, self.data_report = train_and_eval(
            lambda path: load_prompts(path, self.tokenizer, data, limit, cfg.rollout.max_new_tokens), data,
            cfg.trainer.seed)
        self.sampler = PromptSampler(self.train_prompts, cfg.trainer.seed, data.shuffle)
        self.uses_reference = cfg.algorithm.dpo.uses_reference
        self.engine = choose_engine(cfg.rollout.engine, cfg.model.path, cfg.ray.rollout.num_gpus)
        self.reference_by_policy = reference_served_by_policy(cfg)
        self.baseline_scores: Optional[list[float]] = None
        """The starting policy's held-out scores, the other side of every win-rate."""
        self.task_reward = TaskReward(cfg.eval.task_reward) if cfg.eval.task_reward else None

    def trained_roles(self) -> list[str]:
        return ["policy"]

    def frozen_groups(self) -> dict[str, tuple]:
        reference = ({"reference": (ReferenceActor, ())} if self.uses_reference and not self.reference_by_policy
                     else {})
        return {**reference, "reward": (RewardActor, ()), "rollout": (RolloutActor, (self.engine.name, False))}

    @property
    def has_held_out(self) -> bool:
        return bool(self.eval_prompts)

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "baseline_scores": self.baseline_scores}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.baseline_scores = state["baseline_scores"]

    def summary(self) -> dict:
        return {"reward_source": self.cfg.reward.source, "rollout_engine": f"{self.engine.name} ({self.engine.reason})"}

    def train_step(self, step: int) -> StepOutput:
        cfg, rt, timings = self.cfg, self.runtime, {}
        groups = rt.groups
        n = cfg.rollout.samples_per_prompt
        # 1. Generate: prompts, and n samples of each from the engines (which hold the current policy).
        prompts = self.sampler.next_batch(cfg.trainer.prompts_per_step)
        start = time.perf_counter()
        rollout = rt.phase("generate", lambda: phases.generate(
            cfg, groups["rollout"], self.tokenizer, prompts, n, seed=step_seed(cfg.trainer.seed, step),
            policy_version=step - 1), stateful=("rollout",))
        timings["generate"] = time.perf_counter() - start
        # 2. Score: AI feedback, one score per sample from the reward source (clipped to reward.clip).
        start = time.perf_counter()
        scores = rt.phase("score", lambda: phases.score(groups["reward"], rollout, cfg.reward.clip),
                          stateful=("reward",))
        phases.warn_nonfinite(scores, step)
        timings["judge"] = time.perf_counter() - start
        # 3. Pairs: best against worst of each prompt.
        pairs = pairs_from_rollout(rollout, prompts, scores, n)
        train_metrics: dict = {}
        start = time.perf_counter()
        if pairs:
            # 4. Train: DPO steps on the fresh pairs (padded to whole mini-batches; padding weighs 0).
            mini = cfg.trainer.mini_batch_size
            size = phases.padded_size(len(pairs), 1, mini)
            batch = padded_preference_batch(pairs, size, self.tokenizer.pad_token_id)
            if self.uses_reference:
                # From the reference group, or from the policy group (its adapters disabled, or its copy).
                group, method = ((groups["policy"], "forward_reference") if self.reference_by_policy
                                 else (groups["reference"], "forward"))
                batch.ref_chosen_logps, batch.ref_rejected_logps = rt.phase(
                    "reference", lambda: phases.preference_reference_logps(group, batch, method))
            train_metrics = rt.phase("train", lambda: phases.train_on(
                groups["policy"], [batch.select(slice(i, i + mini)) for i in range(0, size, mini)]))
            timings["train"] = time.perf_counter() - start
            # 5. Push weights: the new policy into the engines.
            start = time.perf_counter()
            train_metrics["weight_sync/megabytes"] = rt.phase("weight_sync", lambda: rt.push_weights(step)) / 2**20
            timings["weight_sync"] = time.perf_counter() - start
        # 6. Metrics.
        finite = scores[torch.isfinite(scores)]
        lengths = rollout.response_mask.sum(dim=1)
        metrics = {
            "reward/mean": float(finite.mean()) if len(finite) else float("nan"),
            "reward/std": float(finite.std()) if len(finite) > 1 else 0.0,
            "reward/invalid": int((~torch.isfinite(scores)).sum()),
            "rlaif/pairs": len(pairs),
            "response_length/mean": float(lengths.float().mean()),
            "train/skipped_update": 0 if pairs else 1,
            **train_metrics,
            **{f"timing/{k}_s": v for k, v in timings.items()},
        }
        k = cfg.logging.sample_completions
        return StepOutput(metrics, samples=(rollout.prompts[:k], rollout.responses[:k], scores[:k].tolist()))

    def evaluate(self) -> dict:
        """`eval.samples_per_prompt` samples per held-out prompt from the current weights, scored against the
        start's samples."""
        cfg, rt = self.cfg, self.runtime
        rollout = rt.phase("evaluate", lambda: phases.generate(
            cfg, rt.groups["rollout"], self.tokenizer, self.eval_prompts, cfg.eval.samples_per_prompt,
            seed=eval_seed(cfg.trainer.seed), policy_version=rt.step), stateful=("rollout",))
        scores = rt.phase("evaluate", lambda: phases.score(rt.groups["reward"], rollout, cfg.reward.clip),
                          stateful=("reward",)).tolist()
        if self.baseline_scores is None:
            self.baseline_scores = scores
        finite = [s for s in scores if math.isfinite(s)]
        metrics = {
            "eval/win_rate": win_rate(scores, self.baseline_scores),
            "eval/reward/mean": sum(finite) / len(finite) if finite else float("nan"),
            "eval/samples": len(scores),
        }
        if self.task_reward:
            metrics.update(self.task_reward.metrics(rollout.prompts, rollout.responses, rollout.columns))
        return metrics
