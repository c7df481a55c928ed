"""The PPO driver: spawns the actor groups, runs the step loop, checkpoints, shuts down.

Lifecycle: `start()` places and spawns the groups (policy and critic replicas form their
process groups, the rollout engines load the start weights), optionally restores the latest
complete checkpoint, then `run()` loops over steps, and `shutdown()` kills the actors in the
reverse order of their use (rollout, reward, reference, critic, policy) and frees the
placement groups. Each step reads top to bottom as numbered phases, one call each.
Evaluation (held-out reward on `data.eval_path` prompts, the general-ability probe and the
forgetting gate of rlhf.evaluation) runs before the first step, every `eval.every_steps` and
after the last.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from contextlib import contextmanager
from typing import Optional

import ray
import torch

from actors.env import EnvActor, EnvironmentGroup
from actors.frozen import ReferenceActor, RewardActor
from actors.groups import ActorGroup, Placement
from actors.rollout import RolloutActor
from actors.supervisor import Supervisor, get_fail_fast
from actors.trainer import TrainingActor
from rlhf.algorithms.ppo_advantages import compute_targets, sequence_kl
from rlhf.algorithms.ppo_metrics import ppo_step_metrics
from rlhf.checkpoint import CheckpointManager
from rlhf.config import Config, to_dict
from rlhf.data.prompts import Prompt, PromptSampler, load_prompts, prompt_tokenizer
from rlhf.evaluation.probe import GeneralProbe
from rlhf.evaluation.tracker import EvalTracker
from rlhf.faults import RESTARTABLE_ROLES, BadStepCounter, nonfinite_names
from rlhf.kl import AdaptiveKLController, FixedKLController
from rlhf.metrics import MetricsLogger
from rlhf.models.loading import context_limit
from rlhf.modes.runtime import (evaluation_due, generate_rollout, probe_general, push_policy_weights, save_best,
                                score_rollout)
from rlhf.records import Experience, RolloutBatch, TrainStats
from rlhf.rewards.columns import score_args
from rlhf.rollout.batch import collate_rollout
from rlhf.rollout.dispatch import collect_generations
from rlhf.rollout.sampling import engine_sampling
from rlhf.rollout.episodes import generate_episode_rollout, uses_reward_source, with_episode_rewards
from rlhf.rollout.schedule import GenerationSchedule, InFlight
from rlhf.rollout.select import choose_engine, reuse_rollout_logprobs

logger = logging.getLogger(__name__)

EVAL_SEED = 7_000_003
"""Held-out prompts are sampled with this seed (plus trainer.seed) at every eval point: same draws, new weights."""


def _cat_split(refs: list) -> torch.Tensor:
    return torch.cat(get_fail_fast(refs))


class PPOOrchestrator:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.output_dir = cfg.trainer.output_dir
        self.engine = choose_engine(cfg.rollout.engine, cfg.model.path, cfg.ray.rollout.num_gpus)
        logger.info("rollout engine: %s (%s)", self.engine.name, self.engine.reason)
        self.reuse_rollout_logprobs = reuse_rollout_logprobs(cfg.algorithm.old_logprobs, self.engine.name,
                                                             cfg.model.dtype, cfg.model.quantization,
                                                             cfg.rollout.async_generation)
        # Colocated on GPUs, vLLM hands its memory to the trainers between generation phases.
        self.sleep_engines = self.engine.name == "vllm" and cfg.ray.colocate and cfg.ray.rollout.num_gpus > 0
        self.tokenizer = prompt_tokenizer(cfg.model.path, cfg.data, cfg.model.trust_remote_code)
        prompts, self.data_counts = load_prompts(
            cfg.data.train_path, self.tokenizer, cfg.data.prompt_key, cfg.data.max_prompt_tokens,
            cfg.data.on_oversize, cfg.data.on_bad_row, cfg.data.apply_chat_template,
            context_limit=context_limit(cfg.model.path, cfg.model.trust_remote_code),
            max_new_tokens=cfg.rollout.max_new_tokens,
        )
        logger.info("data %s: %s", cfg.data.train_path, self.data_counts)
        self.eval_prompts: Optional[list[Prompt]] = None
        if cfg.data.eval_path:
            self.eval_prompts, eval_counts = load_prompts(
                cfg.data.eval_path, self.tokenizer, cfg.data.prompt_key, cfg.data.max_prompt_tokens,
                cfg.data.on_oversize, cfg.data.on_bad_row, cfg.data.apply_chat_template,
                context_limit=context_limit(cfg.model.path, cfg.model.trust_remote_code),
                max_new_tokens=cfg.rollout.max_new_tokens)
            self.data_counts.update({f"eval_{k}": v for k, v in eval_counts.items()})
        self.probe = GeneralProbe.from_config(cfg.eval, self.tokenizer)
        self.tracker = EvalTracker("ppo", cfg.eval.max_general_drop, cfg.eval.on_general_drop)
        self.best_dir: Optional[str] = None
        self.gate_stopped = False  # the forgetting gate ended the run (eval.on_general_drop: stop)
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "data_report.json"), "w") as fh:
            json.dump({"train_path": cfg.data.train_path, **self.data_counts}, fh, indent=1)
        self.sampler = PromptSampler(prompts, cfg.trainer.seed, cfg.data.shuffle)
        self.schedule = GenerationSchedule(self.sampler, cfg.trainer.prompts_per_step, cfg.rollout, cfg.trainer.seed)
        kl = cfg.algorithm.kl
        self.kl_ctl = (AdaptiveKLController(kl.init_coef, kl.target, kl.horizon) if kl.controller == "adaptive"
                       else FixedKLController(kl.init_coef))
        self.checkpoints = CheckpointManager(os.path.join(self.output_dir, "checkpoints"), cfg.trainer.keep_checkpoints)
        self.step = 0
        self.history: list[dict] = []
        self.placement: Optional[Placement] = None
        self.groups: dict[str, ActorGroup] = {}
        self.memory_report: dict = {}
        self.supervisor = Supervisor(self.groups, cfg.ray.step_retries, cfg.ray.placement_timeout_s)
        self.bad_steps = BadStepCounter(cfg.trainer.max_bad_steps)
        self.weights_version = 0  # the policy step whose weights the rollout engines hold
        self.last_checkpoint: Optional[str] = None
        self.stop_requested = False  # set by SIGTERM (`ray job stop`) / Ctrl-C: checkpoint, then end
        self.stopped = False

    # ---------------------------------------------------------------- lifecycle
    @property
    def reference_folded(self) -> bool:
        """With PEFT (lora, ia3) the reference is the policy with its adapters disabled: no reference group."""
        return self.cfg.model.peft_method is not None and self.cfg.model.lora.fold_reference

    def group_names(self) -> list[str]:
        names = ["policy", "reward", "rollout"] if self.reference_folded else ["policy", "reference", "reward", "rollout"]
        if self.cfg.algorithm.uses_critic:
            names.insert(1, "critic")
        if self.cfg.rollout.env:  # multi-turn episodes: the environments' actor group
            names.append("env")
        return names

    def start(self, resume: bool = False) -> None:
        cfg = self.cfg
        names = self.group_names()
        self.placement = Placement(cfg.ray, names)
        for role in ("policy", "critic"):
            if role in names:
                self.groups[role] = self._spawn_trainers(role)
        if not self.reference_folded:
            self.groups["reference"] = self._spawn("reference", ReferenceActor)
        self.groups["reward"] = self._spawn("reward", RewardActor)
        self.groups["rollout"] = self._spawn("rollout", RolloutActor, self.engine.name, self.sleep_engines)
        if "env" in names:
            self.groups["env"] = self._spawn("env", EnvActor)
        self.write_placement()
        self._log_group_memory()
        if resume or cfg.trainer.resume == "auto":
            self._restore_latest()
        if self.weights_version == 0 and cfg.model.quantization != "none":
            # The engines loaded the full-precision base; the policy computes with its 4-bit copy.
            self.push_weights(version=0)

    def write_placement(self) -> None:
        """Where every actor runs (node id, address, pid, resources): placement.json and the log."""
        placement_log = {name: group.where() for name, group in self.groups.items()}
        with open(os.path.join(self.output_dir, "placement.json"), "w") as fh:
            json.dump(placement_log, fh, indent=1)
        self.supervisor.record(placement_log)
        for name, where in placement_log.items():
            for rank, w in enumerate(where):
                logger.info("placement: %s[%d] on node %s (%s) pid %d resources %s", name, rank, w["node_id"][:12],
                            w["node_ip"], w["pid"], w["resources"])

    def _log_group_memory(self) -> None:
        report = ray.get(self.groups["policy"].handles[0].memory_report.remote())
        if self.reference_folded:
            logger.info("%d actor groups (%s); reference folded into the policy: saved %.1f MB of reference "
                        "weights per policy replica (adapters: %.2f MB trainable)", len(self.groups),
                        ", ".join(self.groups), report["frozen_bytes"] / 2**20, report["trainable_bytes"] / 2**20)
        else:
            logger.info("%d actor groups (%s)", len(self.groups), ", ".join(self.groups))
        self.memory_report = {"actor_groups": len(self.groups), "reference_folded": self.reference_folded,
                              "reference_bytes_saved": report["frozen_bytes"] if self.reference_folded else 0,
                              "trainable_bytes": report["trainable_bytes"]}

    def _spawn(self, name: str, actor_cls, *extra_args) -> ActorGroup:
        replicas = getattr(self.cfg.ray, name).replicas
        # Stateless roles come back after a crash (constructor rerun); the driver retries the phase.
        restarts = self.cfg.ray.max_restarts if name in RESTARTABLE_ROLES else 0
        handles = [actor_cls.options(max_restarts=restarts, **self.placement.options(name, r)).remote(
                       self.cfg, r, *extra_args)
                   for r in range(replicas)]
        return ActorGroup(name, handles)

    def _spawn_trainers(self, role: str) -> ActorGroup:
        world = getattr(self.cfg.ray, role).replicas
        handles = [TrainingActor.options(**self.placement.options(role, r)).remote(role, self.cfg, r, world)
                   for r in range(world)]
        addr, port = ray.get(handles[0].master_address.remote())
        get_fail_fast([h.setup.remote(addr, port) for h in handles])
        return ActorGroup(role, handles)

    def shutdown(self) -> None:
        for name in ("env", "rollout", "reward", "reference", "critic", "policy"):
            for handle in self.groups.get(name, ActorGroup(name, [])).handles:
                ray.kill(handle, no_restart=True)
        self.groups.clear()
        if self.placement is not None:
            self.placement.remove()
            self.placement = None

    # ---------------------------------------------------------------- the loop
    @property
    def evaluating(self) -> bool:
        return self.eval_prompts is not None or self.probe is not None

    def run(self) -> dict:
        cfg = self.cfg
        fresh = self.step == 0 and self.evaluating
        metrics_log = MetricsLogger(self.output_dir, to_dict(cfg), cfg.logging.wandb, cfg.logging.progress,
                                    cfg.trainer.steps + int(fresh), start_step=self.step)
        started = time.perf_counter()
        try:
            if fresh:  # the starting model's held-out metrics: what gains and drops are measured against
                metrics_log.log(0, self.evaluate(0))
            while self.step < cfg.trainer.steps:
                self.step += 1
                metrics, samples = self.train_step(self.step)
                if self.evaluating and evaluation_due(cfg, self.step):
                    metrics.update(self.evaluate(self.step))
                metrics_log.log(self.step, metrics)
                metrics_log.log_samples(self.step, *samples)
                self.history.append(metrics)
                if (cfg.trainer.save_steps and self.step % cfg.trainer.save_steps == 0) or self.step == cfg.trainer.steps:
                    self._phase("checkpoint", self.save_checkpoint)
                if self.stop_requested:
                    self._stop_with_checkpoint()
                    break
                if self.gate_stopped:
                    logger.warning("forgetting gate stopped the run after step %d; the best model within the limit "
                                   "is %s (step %s); no final/ written", self.step, self.best_dir,
                                   self.tracker.best_step)
                    break
            final_dir = None
            if cfg.trainer.save_hf_model and not (self.stopped or self.gate_stopped):
                final_dir = os.path.join(self.output_dir, "final")
                self._phase("save_pretrained", lambda: get_fail_fast(self.groups["policy"].call("save_pretrained",
                                                                                               final_dir)))
        finally:
            metrics_log.close()
        return self._summary(time.perf_counter() - started, final_dir)

    def train_step(self, step: int) -> tuple[dict, tuple]:
        cfg, timings = self.cfg, {}
        step_start = time.perf_counter()
        # 1-2. Prompts for this step (the sampler's position is part of the checkpoint), generated by
        #      the rollout engines, or already in flight since the last step (off-by-one mode).
        with self._timed(timings, "generate"):
            prompts, in_flight = self.schedule.take(step)
            # pop(): a retry after an engine restart finds the list empty and generates afresh.
            rollout = self._phase("generate", lambda: self.generate(prompts, step, in_flight.pop() if in_flight else None),
                                  stateful=("rollout", "env"))
            if self.sleep_engines:
                get_fail_fast(self.groups["rollout"].call("sleep"))
        if cfg.rollout.async_generation and step < cfg.trainer.steps and not self.stop_requested:
            self.schedule.start_early(step + 1, self.groups["rollout"].handles, self.weights_version)
        # 3. Experience: old log-probs, reference log-probs, values and scores, all in parallel.
        with self._timed(timings, "experience"):
            logprobs, ref_logprobs, values, scores = self._phase(
                "experience", lambda: self.make_experience(rollout), stateful=("reference", "reward"))
        # 4. KL-shaped rewards and advantages.
        kl_coef = self.kl_ctl.value
        targets = compute_targets(
            scores, logprobs, ref_logprobs, rollout.response_mask, values,
            advantage=cfg.algorithm.advantage, kl_coef=kl_coef, kl_estimator=cfg.algorithm.kl.estimator,
            gamma=cfg.algorithm.gamma, gae_lambda=cfg.algorithm.gae_lambda,
            group_size=cfg.rollout.samples_per_prompt, whiten_advantages=cfg.algorithm.whiten_advantages,
        )
        mask = rollout.response_mask * targets.valid.unsqueeze(1)
        experience = Experience(rollout.sequences, rollout.attention_mask, mask, logprobs, targets.advantages,
                                targets.returns, values, rollout.prompt_len)
        # 5. PPO epochs over mini-batches on policy and critic, skipped when no sample is usable or
        #    a target is NaN/inf (never written into the weights; counted, and too many stop the run).
        bad = nonfinite_names({"advantages": targets.advantages, "returns": targets.returns}, mask)
        if not bool(targets.valid.any()):
            bad.append("rewards (whole batch)")
        with self._timed(timings, "train"):
            usable = bool(targets.valid.any()) and not bad
            train_metrics = self._phase("train", lambda: self.update(experience, step)) if usable else {}
        bad += [k for k, v in train_metrics.items() if k.endswith("/skipped_optimizer_steps") and v > 0]
        bad += [k for k in ("policy/loss", "critic/loss") if k in train_metrics and not math.isfinite(train_metrics[k])]
        # 6. Push the new policy weights into the rollout engines.
        with self._timed(timings, "weight_sync"):
            if train_metrics:
                megabytes = self._phase("weight_sync", lambda: self.push_weights(version=step)) / 2**20
                train_metrics["weight_sync/megabytes"] = megabytes
        # 7. Steer the KL coefficient with the KL measured on this batch (a non-finite KL is not news).
        current_kl = float(sequence_kl(targets.kl, mask))
        if math.isfinite(current_kl):
            self.kl_ctl.update(current_kl, n_steps=len(rollout))
        else:
            bad.append("kl")
        self.bad_steps.update(step, bad, self.last_checkpoint)
        # 8. Metrics.
        timings["step"] = time.perf_counter() - step_start
        metrics = ppo_step_metrics(step, rollout, scores, targets.valid, mask,
                                   None if self.reuse_rollout_logprobs else logprobs, current_kl, kl_coef,
                                   train_metrics, timings, has_critic="critic" in self.groups)
        metrics["train/nonfinite_skipped"] = 1 if bad else 0
        metrics["train/nonfinite_steps_total"] = self.bad_steps.total
        metrics["faults/actor_restarts"] = self.supervisor.restarts
        n = cfg.logging.sample_completions
        samples = (rollout.prompts[:n], rollout.responses[:n], scores[:n].tolist())
        if rollout.episodes is not None:  # multi-turn: episode metrics and whole transcripts
            metrics.update(rollout.episodes.metrics)
            samples += (rollout.episodes.transcripts[:n],)
        return metrics, samples

    # ---------------------------------------------------------------- phases
    def generate(self, prompts: list[Prompt], step: int, in_flight: Optional[InFlight] = None) -> RolloutBatch:
        """The step's rollout: collected from requests already in flight, else generated now. A retry
        after an engine restart passes none (the lost requests are submitted again)."""
        if self.cfg.rollout.env:
            return generate_episode_rollout(self.cfg.rollout, self.groups["rollout"].handles,
                                            EnvironmentGroup(self.groups["env"], get_fail_fast), self.tokenizer,
                                            prompts, self.schedule.sampling_for(step),
                                            self.cfg.rollout.samples_per_prompt, self.weights_version, get_fail_fast)
        if in_flight is None:
            in_flight = InFlight(self.schedule.submit(self.groups["rollout"].handles, prompts, step),
                                 self.weights_version)
        generations = collect_generations(in_flight.pending, fetch=get_fail_fast)
        return collate_rollout([p.token_ids for p in prompts], [p.text for p in prompts], [p.row for p in prompts],
                               generations, self.tokenizer, policy_version=in_flight.weights_version,
                               prompt_columns=[p.columns for p in prompts])

    def evaluate(self, step: int) -> dict:
        """Held-out reward (one seeded sample per eval prompt), the general probe, the gate."""
        cfg, metrics = self.cfg, {}
        if self.eval_prompts and cfg.rollout.env:  # multi-turn: one seeded episode per eval prompt
            rollout = self._phase("evaluate", lambda: generate_episode_rollout(
                cfg.rollout, self.groups["rollout"].handles, EnvironmentGroup(self.groups["env"], get_fail_fast),
                self.tokenizer, self.eval_prompts, engine_sampling(cfg.rollout, 1, EVAL_SEED + cfg.trainer.seed), 1,
                step, get_fail_fast), stateful=("rollout", "env"))
            source = (self._phase("evaluate", lambda: score_rollout(self.groups["reward"], rollout), stateful=("reward",))
                      if uses_reward_source(cfg.rollout) else None)
            scores = with_episode_rewards(cfg.rollout, rollout, source)
            metrics.update({f"eval/{k}": v for k, v in rollout.episodes.metrics.items()})
        elif self.eval_prompts:
            rollout = self._phase("evaluate", lambda: generate_rollout(
                cfg, self.groups["rollout"], self.tokenizer, self.eval_prompts, 1, seed=EVAL_SEED + cfg.trainer.seed,
                policy_version=step), stateful=("rollout",))
            scores = self._phase("evaluate", lambda: score_rollout(self.groups["reward"], rollout), stateful=("reward",))
        if self.eval_prompts:
            finite = scores[torch.isfinite(scores)]
            metrics["eval/reward/mean"] = float(finite.mean()) if len(finite) else float("nan")
        if self.probe is not None:
            metrics.update(probe_general(self.groups["policy"], self.probe, fetch=get_fail_fast))
        verdict = self.tracker.observe(step, metrics)
        if verdict.new_best:
            self.best_dir = save_best(self.groups["policy"], self.output_dir, step, metrics, fetch=get_fail_fast)
        self.gate_stopped = verdict.action == "stop"
        return metrics

    def make_experience(self, rollout: RolloutBatch):
        seq, attn, plen = rollout.sequences, rollout.attention_mask, rollout.prompt_len

        def fan_out(group: ActorGroup, method: str = "forward") -> list:
            parts = zip(torch.tensor_split(seq, len(group)), torch.tensor_split(attn, len(group)))
            return group.call_each(method, [(s, a, plen) for s, a in parts])

        # Old log-probs: the engine's own (same model, same weights, same precision) or recomputed.
        policy_refs = None if self.reuse_rollout_logprobs else fan_out(self.groups["policy"])
        ref_refs = (fan_out(self.groups["policy"], "forward_reference") if self.reference_folded
                    else fan_out(self.groups["reference"]))
        critic_refs = fan_out(self.groups["critic"]) if "critic" in self.groups else None
        reward = self.groups["reward"]
        rows = torch.tensor_split(torch.arange(len(rollout)), len(reward))
        score_refs = (reward.call_each("score", [score_args(rollout, r) for r in rows])
                      if uses_reward_source(self.cfg.rollout) else [])
        logprobs = (rollout.rollout_logprobs * rollout.response_mask if policy_refs is None
                    else _cat_split(policy_refs))
        ref_logprobs = _cat_split(ref_refs)
        values = _cat_split(critic_refs) if critic_refs else None
        scores = with_episode_rewards(self.cfg.rollout, rollout, _cat_split(score_refs) if score_refs else None)
        if self.cfg.reward.clip is not None:
            scores = scores.clamp(-self.cfg.reward.clip, self.cfg.reward.clip)
        return logprobs, ref_logprobs, values, scores

    def update(self, experience: Experience, step: int) -> dict:
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.trainer.seed * 1_000_003 + step)
        size = cfg.trainer.mini_batch_size
        plans = {role: [[] for _ in range(len(self.groups[role]))] for role in ("policy", "critic")
                 if role in self.groups}
        for _ in range(cfg.algorithm.ppo_epochs):
            order = torch.randperm(len(experience), generator=generator)
            for start in range(0, len(experience), size):
                mini = experience.select(order[start:start + size])
                for role, plan in plans.items():
                    for replica, shard in enumerate(mini.split(len(plan))):
                        plan[replica].append(shard)
        refs = {role: self.groups[role].call_each("train", [(shards,) for shards in plan])
                for role, plan in plans.items()}
        stats = iter(get_fail_fast([r for role_refs in refs.values() for r in role_refs]))
        metrics = {}
        for role, role_refs in refs.items():
            metrics.update(TrainStats.merge([next(stats) for _ in role_refs]))
        return metrics

    def push_weights(self, version: int) -> int:
        """Gather the policy (from ZeRO-3 shards if need be) and load it into every engine; returns bytes sent."""
        sent = push_policy_weights(self.groups["policy"], self.groups["rollout"], version, fetch=get_fail_fast)
        self.weights_version = version
        return sent

    # ---------------------------------------------------------------- faults
    def _phase(self, name: str, fn, stateful: tuple[str, ...] = ()):
        return self.supervisor.run_phase(name, fn, self._after_restart, lambda: self.last_checkpoint, stateful)

    def _after_restart(self, role: str) -> None:
        """A restarted actor reran its constructor: engines hold the base weights again."""
        if role == "rollout" and self.weights_version:
            self.push_weights(self.weights_version)
        self.write_placement()

    def request_stop(self) -> None:
        """Called from a signal handler: finish the running step, checkpoint, end the run."""
        self.stop_requested = True

    def _stop_with_checkpoint(self) -> None:
        if self.last_checkpoint is None or not self.last_checkpoint.endswith(f"step_{self.step}"):
            self._phase("checkpoint", self.save_checkpoint)
        self.stopped = True
        logger.warning("stop requested: ended after step %d with checkpoint %s; resubmit with --resume to continue",
                       self.step, self.last_checkpoint)

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> str:
        staging = self.checkpoints.staging(self.step)
        refs = []
        for role in ("policy", "critic"):
            if role in self.groups:
                refs += self.groups[role].call("save_checkpoint", os.path.join(staging, role))
        get_fail_fast(refs)
        state = {
            "step": self.step,
            "kl_controller": self.kl_ctl.state_dict(),
            # Prompts already in flight for the next step are drawn again after a resume.
            "sampler": self.schedule.sampler_state(),
            "python_rng": repr(random.getstate()),
            "torch_rng": torch.get_rng_state().tolist(),
            "bad_steps": self.bad_steps.state_dict(),
            "eval": self.tracker.state_dict(),
            "best_dir": self.best_dir,
        }
        self.checkpoints.save_trainer_state(staging, state)
        self.last_checkpoint = self.checkpoints.commit(self.step, staging)
        return self.last_checkpoint

    def _restore_latest(self) -> None:
        found = self.checkpoints.latest_trainer_state()
        if found is None:
            return
        folder, state = found
        refs = []
        for role in ("policy", "critic"):
            if role in self.groups:
                refs += self.groups[role].call("load_checkpoint", os.path.join(folder, role))
        get_fail_fast(refs)
        self.step = state["step"]
        self.last_checkpoint = folder
        self.bad_steps.load_state_dict(state.get("bad_steps", {"in_a_row": 0, "total": 0}))
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.sampler.load_state_dict(state["sampler"])
        if "eval" in state:
            self.tracker.load_state_dict(state["eval"])
            self.best_dir = state.get("best_dir")
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        # The engines started from the base weights: give them the restored policy.
        self.push_weights(version=self.step)
        logger.info("resumed from %s at step %d (kl coef %.6g)", folder, self.step, self.kl_ctl.value)

    # ---------------------------------------------------------------- reporting
    @contextmanager
    def _timed(self, timings: dict, name: str):
        start = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - start

    def _summary(self, wall_s: float, final_dir: Optional[str]) -> dict:
        def mean_of(rows, key):
            vals = [r[key] for r in rows if r.get(key) == r.get(key)]
            return sum(vals) / len(vals) if vals else float("nan")

        head, tail = self.history[:3], self.history[-3:]
        return {
            "steps": self.step,
            "rollout_engine": f"{self.engine.name} ({self.engine.reason})",
            "old_logprobs": "rollout engine" if self.reuse_rollout_logprobs else "recomputed by the policy",
            **self.memory_report,
            "stopped": self.stopped,
            "reward_start": mean_of(head, "reward/mean"),
            "reward_end": mean_of(tail, "reward/mean"),
            "kl_end": mean_of(tail, "kl/mean"),
            "kl_coef": self.kl_ctl.value,
            "wall_s": wall_s,
            "output_dir": self.output_dir,
            "final_model": final_dir,
            "metrics": os.path.join(self.output_dir, "metrics.jsonl"),
            **({"evaluation": self.tracker.summary(self.best_dir)} if self.evaluating else {}),
        }

