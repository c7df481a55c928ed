"""What every mode driver shares: groups and placement, the step loop, evaluation, checkpoints.

A mode (sft, rm, dpo, rlaif) supplies only its own pieces: which groups it needs, one training
step and one evaluation; `ModeRuntime` places and spawns the groups, runs the numbered loop
(train step, evaluation every `eval.every_steps` and at both ends, log, checkpoint), saves the
trained model in Hugging Face format and tears everything down in reverse order of use. Each
evaluation adds the general-ability probe when configured, and the forgetting gate
(rlhf.evaluation) may keep the best model within its limit in `best/` or stop the run.
The rollout phases (`generate_rollout`, `push_policy_weights`) are PPO's, shared here.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, Optional

import ray
import torch

from actors.groups import ActorGroup, Placement
from actors.trainer import TrainingActor
from rlhf.checkpoint import CheckpointManager
from rlhf.config import Config, to_dict
from rlhf.data.prompts import Prompt
from rlhf.evaluation.probe import GeneralProbe
from rlhf.evaluation.tracker import EvalTracker
from rlhf.metrics import MetricsLogger
from rlhf.masked import masked_sum
from rlhf.models.loading import load_tokenizer
from rlhf.records import PreferenceBatch, RolloutBatch, TrainStats
from rlhf.rollout.sampling import engine_sampling
from rlhf.rewards.columns import score_args
from rlhf.rollout.batch import collate_rollout
from rlhf.rollout.dispatch import generate_on_engines

logger = logging.getLogger(__name__)

SHUTDOWN_ORDER = ("rollout", "reward", "reference", "critic", "policy")


def spawn_trainers(cfg: Config, placement: Placement, role: str) -> ActorGroup:
    """The replicas of a trained role, joined into one process group."""
    world = getattr(cfg.ray, role).replicas
    handles = [TrainingActor.options(**placement.options(role, r)).remote(role, cfg, r, world) for r in range(world)]
    addr, port = ray.get(handles[0].master_address.remote())
    ray.get([h.setup.remote(addr, port) for h in handles])
    return ActorGroup(role, handles)


def spawn_group(cfg: Config, placement: Placement, name: str, actor_cls, *extra_args) -> ActorGroup:
    """The replicas of a frozen role; each actor is built as actor_cls(cfg, rank, *extra_args)."""
    replicas = getattr(cfg.ray, name).replicas
    return ActorGroup(name, [actor_cls.options(**placement.options(name, r)).remote(cfg, r, *extra_args)
                             for r in range(replicas)])


def kill_group(group: Optional[ActorGroup]) -> None:
    for handle in group.handles if group else []:
        ray.kill(handle, no_restart=True)


def train_on(group: ActorGroup, mini_batches: list) -> dict[str, float]:
    """One optimizer step per global mini-batch, each split evenly over the group's replicas."""
    shards = [mb.split(len(group)) for mb in mini_batches]
    per_replica = [[shard[r] for shard in shards] for r in range(len(group))]
    return TrainStats.merge(ray.get(group.call_each("train", [(shards,) for shards in per_replica])))


def evaluate_on(group: ActorGroup, batch) -> dict[str, float]:
    """The objective's metrics on a held-out batch (its length a multiple of replicas * micro-batch)."""
    stats = ray.get(group.call_each("evaluate", [(shard,) for shard in batch.split(len(group))]))
    return {f"eval/{k}": v for k, v in TrainStats.merge(stats).items()}


def probe_general(policy: ActorGroup, probe: GeneralProbe, fetch: Callable[[list], list] = ray.get) -> dict:
    """The general-ability probe on the policy replicas (each runs every row; rank 0 answers)."""
    return probe.metrics(fetch(policy.call("general_probe", *probe.actor_args()))[0])


def evaluation_due(cfg: Config, step: int) -> bool:
    """Evaluate after the last step and every `eval.every_steps` steps (step 0 is the caller's)."""
    every = cfg.eval.every_steps
    return step == cfg.trainer.steps or bool(every and step % every == 0)


def save_best(policy: ActorGroup, output_dir: str, step: int, metrics: dict,
              fetch: Callable[[list], list] = ray.get) -> str:
    """The evaluated model into output_dir/best (Hugging Face format, or PEFT adapters), with best.json."""
    folder = os.path.join(output_dir, "best")
    fetch(policy.call("save_pretrained", folder))
    with open(os.path.join(folder, "best.json"), "w") as fh:
        json.dump({"step": step, **{k: v for k, v in metrics.items() if k.startswith("eval/")}}, fh, indent=1)
    logger.info("best model within the general-drop limit: step %d, saved to %s", step, folder)
    return folder


def reference_is_folded(cfg: Config) -> bool:
    """DPO/RLAIF with PEFT: the reference is the policy with its adapters disabled, no reference group."""
    return cfg.algorithm.dpo.uses_reference and cfg.model.peft_method is not None and cfg.model.lora.fold_reference


def padded_size(n: int, replicas: int, micro_batch_size: int) -> int:
    """n rounded up to a multiple of replicas * micro_batch_size (equal micro-batch counts per replica)."""
    unit = replicas * micro_batch_size
    return -(-n // unit) * unit


def generate_rollout(cfg: Config, engines: ActorGroup, tokenizer, prompts: list[Prompt], n: int, seed: int,
                     policy_version: int) -> RolloutBatch:
    """`n` samples per prompt from the rollout engines (prompts split evenly over them); engine i
    samples with seed `seed * 131 + i`, PPO's seeding, so a resumed run draws the same samples."""
    prompt_ids = [p.token_ids for p in prompts]
    generations = generate_on_engines(engines.handles, prompt_ids, engine_sampling(cfg.rollout, n, seed))
    return collate_rollout(prompt_ids, [p.text for p in prompts], [p.row for p in prompts], generations, tokenizer,
                           policy_version=policy_version, prompt_columns=[p.columns for p in prompts])


def push_policy_weights(policy: ActorGroup, engines: ActorGroup, version: int,
                        fetch: Callable[[list], list] = ray.get) -> int:
    """The policy's full weights (gathered from ZeRO-3 shards on rank 0, LoRA merged) into every
    engine, in place; returns the bytes sent. The one weight-sync path of PPO and RLAIF; `fetch`
    waits for the calls (PPO passes its fail-fast wait)."""
    blobs = fetch(policy.call("weights_blob"))
    blob_ref = ray.put(blobs[0])
    fetch(engines.call("load_weights", blob_ref, version))
    return len(blobs[0])


def score_rollout(reward: ActorGroup, rollout: RolloutBatch) -> torch.Tensor:
    """One score per sample [B] from the reward source (rows split over its replicas)."""
    rows = torch.tensor_split(torch.arange(len(rollout)), len(reward))
    refs = reward.call_each("score", [score_args(rollout, r) for r in rows if len(r)])
    return torch.cat(ray.get(refs)).float()


def reference_logps(reference: ActorGroup, batch: PreferenceBatch,
                    method: str = "forward") -> tuple[torch.Tensor, torch.Tensor]:
    """Summed reference log-probs of the chosen and the rejected responses, [B] each.

    Both blocks go out together, rows split over the replicas of `reference`: the reference group
    (`forward`), or the policy group with its LoRA adapters disabled (`forward_reference`).
    """
    sequences = torch.cat([batch.chosen, batch.rejected])
    attention_mask = torch.cat([batch.chosen_attention_mask, batch.rejected_attention_mask])
    response_mask = torch.cat([batch.chosen_response_mask, batch.rejected_response_mask])
    parts = zip(torch.tensor_split(sequences, len(reference)), torch.tensor_split(attention_mask, len(reference)))
    # Untrimmed: the policy's DPO loss runs these rows untrimmed, and at step 0 (or with adapters
    # disabled) policy and reference must agree exactly, not to float rounding.
    refs = reference.call_each(method, [(s, a, batch.prompt_len, False) for s, a in parts if len(s)])
    logps = masked_sum(torch.cat(ray.get(refs)), response_mask, dim=-1)
    return logps[:len(batch)], logps[len(batch):]


class ModeRuntime:
    """Lifecycle and loop of one mode run; the mode passes its step and evaluation functions."""

    def __init__(self, cfg: Config, trained_role: str, frozen_groups: dict[str, tuple], data_report: dict) -> None:
        """`frozen_groups`: name -> (actor class, extra constructor arguments after cfg and rank);
        `data_report`: what reading the data kept, skipped and dropped (written to data_report.json)."""
        self.cfg = cfg
        self.trained_role = trained_role
        self.frozen_groups = frozen_groups
        self.output_dir = cfg.trainer.output_dir
        self.checkpoints = CheckpointManager(os.path.join(self.output_dir, "checkpoints"), cfg.trainer.keep_checkpoints)
        self.placement: Optional[Placement] = None
        self.groups: dict[str, ActorGroup] = {}
        self.step = 0
        self.history: list[dict] = []
        self.start_metrics: dict = {}
        """The held-out metrics of the starting model (step 0 of metrics.jsonl)."""
        self.probe = (GeneralProbe.from_config(cfg.eval, load_tokenizer(cfg.model.path, cfg.model.trust_remote_code))
                      if cfg.eval.general_probe else None)
        self.tracker = EvalTracker(cfg.algorithm.name, cfg.eval.max_general_drop, cfg.eval.on_general_drop)
        self.best_dir: Optional[str] = None
        self.gate_stopped = False
        """The forgetting gate ended the run (eval.on_general_drop: stop); no final/ is written."""
        self.stop_requested = False
        """Set by SIGTERM (`ray job stop`) or Ctrl-C: finish the step, checkpoint, end without the final save."""
        logger.info("data: %s", data_report)
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "data_report.json"), "w") as fh:
            json.dump({"train_path": cfg.data.train_path, "eval_path": cfg.data.eval_path, **data_report}, fh, indent=1)

    def group_names(self) -> list[str]:
        return [self.trained_role, *self.frozen_groups]

    def start(self) -> None:
        self.placement = Placement(self.cfg.ray, self.group_names())
        self.groups[self.trained_role] = spawn_trainers(self.cfg, self.placement, self.trained_role)
        for name, (actor_cls, extra_args) in self.frozen_groups.items():
            self.groups[name] = spawn_group(self.cfg, self.placement, name, actor_cls, *extra_args)
        with open(os.path.join(self.output_dir, "placement.json"), "w") as fh:
            json.dump({name: group.where() for name, group in self.groups.items()}, fh, indent=1)

    def request_stop(self) -> None:
        """Called from a signal handler (rlhf.train.stop_on_signals)."""
        self.stop_requested = True

    def release(self, name: str) -> None:
        """Kill a group that is no longer needed (e.g. the reference once its log-probs are stored)."""
        kill_group(self.groups.pop(name, None))

    def shutdown(self) -> None:
        for name in SHUTDOWN_ORDER:
            kill_group(self.groups.pop(name, None))
        if self.placement is not None:
            self.placement.remove()
            self.placement = None

    # ------------------------------------------------------------------ the loop
    def run(self, train_step: Callable[[int], dict], evaluate: Optional[Callable[[], dict]],
            mode_state: Callable[[], dict], load_mode_state: Callable[[dict], None], resume: bool) -> dict:
        cfg = self.cfg
        if resume or cfg.trainer.resume == "auto":
            self._restore_latest(load_mode_state)
        fresh = self.step == 0
        metrics_log = MetricsLogger(self.output_dir, to_dict(cfg), cfg.logging.wandb, cfg.logging.progress,
                                    cfg.trainer.steps + int(fresh), start_step=self.step)
        started = time.perf_counter()
        final_dir = None
        if self.probe is None and evaluate is None:
            evaluation = None
        else:
            evaluation = lambda step: self.evaluation(evaluate, step)  # noqa: E731
        try:
            # 0. The held-out metrics of the starting model: what "improved" and "dropped" are measured against.
            if evaluation is not None and fresh:
                self.start_metrics = evaluation(0)
                metrics_log.log(0, self.start_metrics)
            while self.step < cfg.trainer.steps:
                self.step += 1
                step_start = time.perf_counter()
                # 1. One training step of the mode (its own numbered phases inside).
                metrics = train_step(self.step)
                # 2. Held-out evaluation (and the forgetting gate) every eval.every_steps and after the last step.
                last = self.step == cfg.trainer.steps
                if evaluation is not None and evaluation_due(cfg, self.step):
                    metrics.update(evaluation(self.step))
                metrics["timing/step_s"] = time.perf_counter() - step_start
                # 3. Log, and checkpoint every save_steps and at the end.
                metrics_log.log(self.step, metrics)
                self.history.append(metrics)
                saved = (cfg.trainer.save_steps and self.step % cfg.trainer.save_steps == 0) or last
                if saved or self.stop_requested:
                    self._save_checkpoint(mode_state())
                if self.stop_requested:
                    logger.warning("stopped after step %d with a checkpoint; --resume continues", self.step)
                    break
                if self.gate_stopped:
                    logger.warning("forgetting gate stopped the run after step %d; the best model within the limit "
                                   "is %s (step %s); no final/ written", self.step, self.best_dir,
                                   self.tracker.best_step)
                    break
            if cfg.trainer.save_hf_model and not (self.stop_requested or self.gate_stopped):
                final_dir = os.path.join(self.output_dir, "final")
                ray.get(self.groups[self.trained_role].call("save_pretrained", final_dir))
        finally:
            metrics_log.close()
        summary = {"steps": self.step, "stopped": self.stop_requested, "wall_s": time.perf_counter() - started,
                   "output_dir": self.output_dir,
                   "final_model": final_dir, "metrics": os.path.join(self.output_dir, "metrics.jsonl")}
        if evaluation is not None:
            summary["evaluation"] = self.tracker.summary(self.best_dir)
        return summary

    def evaluation(self, evaluate: Optional[Callable[[], dict]], step: int) -> dict:
        """The mode's held-out metrics, the general probe, their changes since step 0, and the gate."""
        metrics = evaluate() if evaluate is not None else {}
        if self.probe is not None:
            metrics.update(probe_general(self.groups[self.trained_role], self.probe))
        verdict = self.tracker.observe(step, metrics)
        if verdict.new_best:
            self.best_dir = save_best(self.groups[self.trained_role], self.output_dir, step, metrics)
        self.gate_stopped = verdict.action == "stop"
        return metrics

    def _save_checkpoint(self, state: dict) -> str:
        staging = self.checkpoints.staging(self.step)
        ray.get(self.groups[self.trained_role].call("save_checkpoint", os.path.join(staging, self.trained_role)))
        self.checkpoints.save_trainer_state(staging, {
            "step": self.step, "mode": state, "eval": self.tracker.state_dict(), "best_dir": self.best_dir,
            "torch_rng": torch.get_rng_state().tolist()})
        return self.checkpoints.commit(self.step, staging)

    def _restore_latest(self, load_mode_state: Callable[[dict], None]) -> None:
        found = self.checkpoints.latest_trainer_state()
        if found is None:
            return
        folder, state = found
        ray.get(self.groups[self.trained_role].call("load_checkpoint", os.path.join(folder, self.trained_role)))
        self.step = state["step"]
        load_mode_state(state["mode"])
        if "eval" in state:
            self.tracker.load_state_dict(state["eval"])
            self.best_dir = state.get("best_dir")
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        logger.info("resumed from %s at step %d", folder, self.step)


    def headline(self, keys: list[str]) -> dict[str, tuple[float, float]]:
        """(at the start, at the end) of each metric, for the run summary."""
        out = {}
        for key in keys:
            values = [row[key] for row in self.history if row.get(key) is not None]
            first = self.start_metrics.get(key, values[0] if values else float("nan"))
            out[key] = (first, values[-1] if values else float("nan"))
        return out


class ModeDriver:
    """The lifecycle every mode driver shares; a mode adds `train_step`, `evaluate` and its `run`."""

    runtime: "ModeRuntime"
    _resume: bool = False

    def group_names(self) -> list[str]:
        return self.runtime.group_names()

    def start(self, resume: bool = False) -> None:
        self.runtime.start()
        self._resume = resume

    def shutdown(self) -> None:
        self.runtime.shutdown()

    def request_stop(self) -> None:
        self.runtime.request_stop()

    def _run(self, mode: str, train_step, evaluate, save_state, load_state, headline_keys: list[str]) -> dict:
        summary = self.runtime.run(train_step, evaluate, save_state, load_state, self._resume)
        return {**summary, "mode": mode, "headline": self.runtime.headline(headline_keys)}

    def evaluate_once(self) -> dict:
        """`rlhf eval`: the held-out metrics and the general probe of the model the groups loaded, no training."""
        evaluate = getattr(self, "evaluate", None)
        runtime = self.runtime
        metrics = evaluate() if evaluate is not None and self._has_held_out() else {}
        if runtime.probe is not None:
            metrics.update(probe_general(runtime.groups[runtime.trained_role], runtime.probe))
        return metrics

    def _has_held_out(self) -> bool:
        return bool(self.cfg.data.eval_path or self.cfg.data.eval_fraction)
