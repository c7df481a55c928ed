"""PPO (and the critic-free GRPO, RLOO, REINFORCE++ via `algorithm.advantage`): its step and its state.

Groups: policy and critic (trained; no critic without GAE), reference (frozen start policy; none
with PEFT and `model.lora.fold_reference`: the policy with adapters disabled; none with
`ray.reference_in_policy`: each policy replica holds a copy), reward (whatever
`reward.source` names) and rollout (engines that get the policy's weights after every update).
State carried across steps and checkpoints: the KL controller and the generation schedule (the
prompt sampler, and in off-by-one mode the next step's requests already in flight).
Held-out metric: `eval/reward/mean`, one seeded sample per `data.eval_path` prompt, clipped like training.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from typing import Optional

import torch

from actors.env import EnvActor
from actors.frozen import ReferenceActor
from actors.reward import RewardActor
from actors.rollout import RolloutActor
from rlhf.algorithms.dynamic_sampling import RESAMPLE_SEED_STRIDE, dynamic_sampling_round
from rlhf.algorithms.policy_gradient_step import (apply_overlong, micro_batches_per_step, policy_gradient_fields,
                                                  reward_kl_coef)
from rlhf.algorithms.ppo_advantages import compute_targets, sequence_kl
from rlhf.algorithms.ppo_losses import with_loss_denominator
from rlhf.algorithms.ppo_metrics import ppo_step_metrics
from rlhf.config import Config
from rlhf.data.prompts import Prompt, PromptSampler, load_prompts, prompt_tokenizer
from rlhf.evaluation.task_reward import TaskReward
from rlhf.faults import nonfinite_names
from rlhf.kl import AdaptiveKLController, FixedKLController
from rlhf.models.loading import context_limit
from rlhf.modes import phases
from rlhf.modes.reference import reference_served_by_policy
from rlhf.modes.runtime import Runtime, StepOutput
from rlhf.records import Experience, RolloutBatch
from rlhf.rollout.batch import collate_rollout
from rlhf.rollout.dispatch import collect_generations
from rlhf.rollout.episodes import uses_reward_source, with_episode_rewards
from rlhf.rollout.schedule import GenerationSchedule, InFlight
from rlhf.rollout.select import choose_engine, reuse_rollout_logprobs
from rlhf.seeds import eval_seed, step_seed

logger = logging.getLogger(__name__)


@contextmanager
def timed(timings: dict, name: str):
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


class PPOMode:
    def __init__(self, cfg: Config, runtime: Runtime) -> None:
        self.cfg, self.runtime = cfg, runtime
        self.engine = choose_engine(cfg.rollout.engine, cfg.model.path, cfg.ray.rollout.num_gpus)
        self.reuse_rollout_logprobs = reuse_rollout_logprobs(cfg.algorithm.old_logprobs, self.engine.name,
                                                             cfg.rollout_dtype, cfg.model.quantization,
                                                             cfg.rollout.async_generation, cfg.algorithm.is_correction)
        # Colocated on GPUs, vLLM hands its memory to the trainers between generation phases.
        self.sleep_engines = self.engine.name == "vllm" and cfg.ray.colocate and cfg.ray.rollout.num_gpus > 0
        self.tokenizer = prompt_tokenizer(cfg.model.path, cfg.data, cfg.model.trust_remote_code)
        limit = context_limit(cfg.model.path, cfg.model.trust_remote_code)
        prompts, self.data_report = load_prompts(cfg.data.train_path, self.tokenizer, cfg.data, limit,
                                                 cfg.rollout.max_new_tokens)
        self.eval_prompts: Optional[list[Prompt]] = None
        if cfg.data.eval_path:
            self.eval_prompts, eval_counts = load_prompts(cfg.data.eval_path, self.tokenizer, cfg.data, limit,
                                                          cfg.rollout.max_new_tokens)
            self.data_report.update({f"eval_{k}": v for k, v in eval_counts.items()})
        self.sampler = PromptSampler(prompts, cfg.trainer.seed, cfg.data.shuffle)
        self.schedule = GenerationSchedule(self.sampler, cfg.trainer.prompts_per_step, cfg.rollout, cfg.trainer.seed)
        kl = cfg.algorithm.kl
        self.kl_ctl = (AdaptiveKLController(kl.init_coef, kl.target, kl.horizon) if kl.controller == "adaptive"
                       else FixedKLController(kl.init_coef))
        self.reference_by_policy = reference_served_by_policy(cfg)
        self.task_reward = TaskReward(cfg.eval.task_reward) if cfg.eval.task_reward else None

    # ---------------------------------------------------------------- groups and state
    def trained_roles(self) -> list[str]:
        return ["policy", "critic"] if self.cfg.algorithm.uses_critic else ["policy"]

    def frozen_groups(self) -> dict[str, tuple]:
        reference = {} if self.reference_by_policy else {"reference": (ReferenceActor, ())}
        env = {"env": (EnvActor, ())} if self.cfg.rollout.env else {}  # multi-turn: the environments' group
        return {**reference, "reward": (RewardActor, ()), "rollout": (RolloutActor, (self.engine.name,
                                                                                     self.sleep_engines)), **env}

    @property
    def has_held_out(self) -> bool:
        return bool(self.eval_prompts)

    def state_dict(self) -> dict:
        # Prompts already in flight for the next step are drawn again after a resume.
        return {"kl_controller": self.kl_ctl.state_dict(), "sampler": self.schedule.sampler_state()}

    def load_state_dict(self, state: dict) -> None:
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.sampler.load_state_dict(state["sampler"])

    def summary(self) -> dict:
        return {"reward_source": self.cfg.reward.source, "rollout_engine": f"{self.engine.name} ({self.engine.reason})",
                "old_logprobs": "rollout engine" if self.reuse_rollout_logprobs else "recomputed by the policy",
                "kl_coef": self.kl_ctl.value}

    # ---------------------------------------------------------------- the step
    def train_step(self, step: int) -> StepOutput:
        cfg, rt, timings = self.cfg, self.runtime, {}
        groups = rt.groups
        step_start = time.perf_counter()
        # 1. Generate: this step's prompts (the sampler's position is part of the checkpoint), sampled
        #    by the engines now, or already in flight since the last step (off-by-one mode).
        with timed(timings, "generate"):
            prompts, in_flight = self.schedule.take(step)
            # pop(): a retry after an engine restart finds the list empty and generates afresh.
            rollout = rt.phase("generate", lambda: self.generate(prompts, step, in_flight.pop() if in_flight else None),
                               stateful=("rollout", "env"))
            if self.sleep_engines:
                phases.get_fail_fast(groups["rollout"].call("sleep"))
        if cfg.rollout.async_generation and step < cfg.trainer.steps and not rt.stop_requested:
            self.schedule.start_early(step + 1, self.launch_early)
        # 2-3. Score and experience: old log-probs, reference log-probs, values and scores, all in parallel.
        with timed(timings, "experience"):
            logprobs, ref_logprobs, values, scores = rt.phase(
                "experience", lambda: self.make_experience(rollout), stateful=("reference", "reward"))
            if cfg.algorithm.dynamic_sampling:  # DAPO: drop flat groups, generate more prompts to refill the batch
                rollout, (logprobs, ref_logprobs, values, scores), sampling_metrics = dynamic_sampling_round(
                    cfg.rollout.samples_per_prompt, cfg.algorithm.max_resample_rounds, self.tokenizer.pad_token_id,
                    rollout, (logprobs, ref_logprobs, values, scores),
                    lambda r: rt.phase("generate", lambda: self.generate(
                        self.sampler.next_batch(cfg.trainer.prompts_per_step), step + r * RESAMPLE_SEED_STRIDE),
                        stateful=("rollout", "env")),
                    lambda more: rt.phase("experience", lambda: self.make_experience(more),
                                          stateful=("reference", "reward")))
        phases.warn_nonfinite(scores, step)
        shaped_scores, keep_rows, length_metrics = apply_overlong(cfg, rollout, scores, self.tokenizer.eos_token_id)
        # 4. Targets: KL-shaped rewards (unless the KL is a loss term) and advantages.
        kl_coef = self.kl_ctl.value
        targets = compute_targets(
            shaped_scores, logprobs, ref_logprobs, rollout.response_mask, values,
            advantage=cfg.algorithm.advantage, kl_coef=reward_kl_coef(cfg, kl_coef),
            kl_estimator=cfg.algorithm.kl.estimator, gamma=cfg.algorithm.gamma, gae_lambda=cfg.algorithm.gae_lambda,
            group_size=cfg.rollout.samples_per_prompt, whiten_advantages=cfg.algorithm.whiten_advantages,
            scale_by_std=cfg.algorithm.grpo_scale_by_std,
        )
        mask = rollout.response_mask * targets.valid.unsqueeze(1) * keep_rows.unsqueeze(1)
        experience = Experience(rollout.sequences, rollout.attention_mask, mask, logprobs, targets.advantages,
                                targets.returns, values, rollout.prompt_len,
                                **policy_gradient_fields(cfg, rollout, ref_logprobs, kl_coef,
                                                         self.reuse_rollout_logprobs))
        # 5. Train: PPO epochs over mini-batches on policy and critic, skipped when no sample is usable
        #    or a target is NaN/inf (never written into the weights; the runtime counts such steps).
        bad = nonfinite_names({"advantages": targets.advantages, "returns": targets.returns}, mask)
        if not bool(targets.valid.any()):
            bad.append("rewards (whole batch)")
        with timed(timings, "train"):
            train_metrics = rt.phase("train", lambda: self.update(experience, step)) if not bad else {}
        # 6. Push the new policy weights into the rollout engines (after any early episodes' last turn).
        self.schedule.settle()
        with timed(timings, "weight_sync"):
            if train_metrics:
                train_metrics["weight_sync/megabytes"] = rt.phase("weight_sync", lambda: rt.push_weights(step)) / 2**20
        # 7. KL update: steer the coefficient with the KL measured on this batch (a non-finite KL is not news).
        current_kl = float(sequence_kl(targets.kl, mask))
        if math.isfinite(current_kl):
            self.kl_ctl.update(current_kl, n_steps=len(rollout))
        else:
            bad.append("kl")
        # 8. Metrics.
        timings["step"] = time.perf_counter() - step_start
        metrics = ppo_step_metrics(step, rollout, scores, targets.valid, mask,
                                   None if self.reuse_rollout_logprobs else logprobs, current_kl, kl_coef,
                                   train_metrics, timings, has_critic="critic" in groups)
        metrics.update(length_metrics, **(sampling_metrics if cfg.algorithm.dynamic_sampling else {}))
        n = cfg.logging.sample_completions
        samples = (rollout.prompts[:n], rollout.responses[:n], scores[:n].tolist())
        if rollout.episodes is not None:  # multi-turn: episode metrics and whole transcripts
            metrics.update(rollout.episodes.metrics)
            samples += (rollout.episodes.transcripts[:n],)
        return StepOutput(metrics, bad, samples)

    # ---------------------------------------------------------------- phases
    def generate(self, prompts: list[Prompt], step: int, in_flight: Optional[InFlight] = None) -> RolloutBatch:
        """The step's rollout: collected from a generation started early, else generated now. A retry
        after an engine restart passes none (the lost work is started again)."""
        if self.cfg.rollout.env:  # multi-turn episodes, turn by turn on the engines and the environments
            if in_flight is not None:
                return in_flight.episodes.result()
            return self.play_episodes(prompts, step, self.runtime.weights_version)
        if in_flight is None:
            in_flight = self.launch_early(prompts, step)
        generations = collect_generations(in_flight.pending, fetch=phases.get_fail_fast)
        return collate_rollout([p.token_ids for p in prompts], [p.text for p in prompts], [p.row for p in prompts],
                               generations, self.tokenizer, policy_version=in_flight.weights_version,
                               prompt_columns=[p.columns for p in prompts])

    def launch_early(self, prompts: list[Prompt], step: int) -> InFlight:
        """Start `step`'s generation with the weights the engines hold now, without waiting for it."""
        version = self.runtime.weights_version
        if self.cfg.rollout.env:
            return InFlight(version, episodes=self.schedule.in_background(self.play_episodes, prompts, step, version))
        return InFlight(version, pending=self.schedule.submit(self.runtime.groups["rollout"].handles, prompts, step))

    def play_episodes(self, prompts: list[Prompt], step: int, weights_version: int) -> RolloutBatch:
        groups, cfg = self.runtime.groups, self.cfg
        return phases.generate(cfg, groups["rollout"], self.tokenizer, prompts, cfg.rollout.samples_per_prompt,
                               seed=step_seed(cfg.trainer.seed, step), policy_version=weights_version,
                               env=groups["env"])

    def make_experience(self, rollout: RolloutBatch):
        groups = self.runtime.groups
        # Old log-probs: the engine's own (same model, same weights, same precision) or recomputed.
        policy_refs = None if self.reuse_rollout_logprobs else phases.submit_forward(groups["policy"], rollout)
        ref_refs = (phases.submit_forward(groups["policy"], rollout, "forward_reference")
                    if self.reference_by_policy else phases.submit_forward(groups["reference"], rollout))
        critic_refs = phases.submit_forward(groups["critic"], rollout) if "critic" in groups else None
        score_refs = phases.submit_scores(groups["reward"], rollout) if uses_reward_source(self.cfg.rollout) else []
        logprobs = (rollout.rollout_logprobs * rollout.response_mask if policy_refs is None
                    else phases.gather(policy_refs))
        values = phases.gather(critic_refs) if critic_refs else None
        source_scores = phases.gather(score_refs) if score_refs else None
        scores = phases.clipped(with_episode_rewards(self.cfg.rollout, rollout, source_scores), self.cfg.reward.clip)
        return logprobs, phases.gather(ref_refs), values, scores

    def update(self, experience: Experience, step: int) -> dict:
        """`algorithm.ppo_epochs` shuffled passes of mini-batches, on policy and critic at once."""
        cfg = self.cfg
        generator = torch.Generator().manual_seed(step_seed(cfg.trainer.seed, step))
        size = cfg.trainer.mini_batch_size
        mini_batches = []
        for _ in range(cfg.algorithm.ppo_epochs):
            order = torch.randperm(len(experience), generator=generator)
            mini_batches += [with_loss_denominator(experience.select(order[start:start + size]), cfg.algorithm.loss_agg,
                                                   cfg.rollout.max_new_tokens, micro_batches_per_step(cfg))
                             for start in range(0, len(experience), size)]
        return phases.train_groups(self.runtime.groups, {role: mini_batches for role in self.trained_roles()})

    def evaluate(self) -> dict:
        """Held-out reward: `eval.samples_per_prompt` seeded samples (or episodes) per eval prompt, clipped like
        training's; `eval/samples` counts them."""
        cfg, rt, metrics = self.cfg, self.runtime, {}
        groups = rt.groups
        self.schedule.settle()  # early episodes use the same environment keys and engines
        if cfg.rollout.env:  # multi-turn: seeded episodes
            rollout = rt.phase("evaluate", lambda: phases.generate(
                cfg, groups["rollout"], self.tokenizer, self.eval_prompts, cfg.eval.samples_per_prompt,
                seed=eval_seed(cfg.trainer.seed), policy_version=rt.step, env=groups["env"]),
                stateful=("rollout", "env"))
            source = (rt.phase("evaluate", lambda: phases.score(groups["reward"], rollout, None), stateful=("reward",))
                      if uses_reward_source(cfg.rollout) else None)
            scores = phases.clipped(with_episode_rewards(cfg.rollout, rollout, source), cfg.reward.clip)
            metrics.update({f"eval/{k}": v for k, v in rollout.episodes.metrics.items()})
        else:
            rollout = rt.phase("evaluate", lambda: phases.generate(
                cfg, groups["rollout"], self.tokenizer, self.eval_prompts, cfg.eval.samples_per_prompt,
                seed=eval_seed(cfg.trainer.seed), policy_version=rt.step), stateful=("rollout",))
            scores = rt.phase("evaluate", lambda: phases.score(groups["reward"], rollout, cfg.reward.clip),
                              stateful=("reward",))
        finite = scores[torch.isfinite(scores)]
        metrics["eval/reward/mean"] = float(finite.mean()) if len(finite) else float("nan")
        metrics["eval/samples"] = len(scores)
        if self.task_reward:
            metrics.update(self.task_reward.metrics(rollout.prompts, rollout.responses, rollout.columns))
        return metrics
