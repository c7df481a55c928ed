"""The one runtime every mode runs in: placement, supervision, the step loop, evaluation, checkpoints.

Lifecycle: `Runtime(cfg)` builds the mode named by `algorithm.name` (its class in
`rlhf.modes.spec.SPECS`), which reads its data and tokenizer, so bad input fails before any
actor starts. `start()` places and spawns the mode's groups (trained roles join their process
groups; stateless roles get `ray.max_restarts`) and restores the latest complete checkpoint on
resume. `run()` loops over steps: 1. the mode's step (its own numbered phases, each inside
`phase()`), 2. bad-step counting, 3. evaluation and the forgetting gate every `eval.every_steps`
and at both ends, 4. log, 5. checkpoint every `trainer.save_steps` and at the end; then the
final model and the summary. `shutdown()` kills the groups in the reverse order of their use
(rollout, reward, teacher, reference, critic, policy) and frees the placement groups.

Supervision is the same for every mode: a stateless actor that dies is restarted by Ray, the
engines get the current weights back, and the phase is retried (`ray.step_retries`). A phase that
fails for good writes an emergency checkpoint of the last completed step (when the step had not
trained yet) and the error names it. A mode object provides: `trained_roles()`,
`frozen_groups()`, `data_report`, `train_step(step) -> StepOutput`, `has_held_out` and `evaluate()`, `state_dict()` / `load_state_dict()`, and optionally `before_loop()`,
`summary()`.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, TypeVar

import ray
import torch

from actors.common import ENGINE_GROUPS, engine_group_env, trained_group_env
from actors.groups import ActorGroup, Placement
from actors.supervisor import Supervisor, get_fail_fast
from actors.trainer import TrainingActor
from rlhf.checkpoint import CheckpointManager
from rlhf.config import Config, to_dict
from rlhf.evaluation.probe import GeneralProbe
from rlhf.evaluation.tracker import EvalTracker
from rlhf.faults import RESTARTABLE_ROLES, BadStepCounter, PhaseFailed, TrainingRankDied, train_faults
from rlhf.metrics import MetricsLogger
from rlhf.models.loading import load_tokenizer
from rlhf import quiet
from rlhf.modes import phases
from rlhf.modes.reference import reference_copy_in_policy, reference_is_folded
from rlhf.modes.spec import SPECS, ModeSpec
from rlhf.rollout.weight_sync import engines_restarted
from rlhf.summary import headline

logger = logging.getLogger(__name__)
T = TypeVar("T")

SHUTDOWN_ORDER = ("env", "rollout", "reward", "teacher", "reference", "critic", "policy")


@dataclass
class StepOutput:
    """What a mode's step hands the runtime."""

    metrics: dict
    bad: list[str] = field(default_factory=list)
    """Why this step's update was skipped for non-finite numbers (empty: a good step)."""
    samples: Optional[tuple] = None
    """(prompts, responses, scores[, transcripts]) for samples.jsonl (transcripts: multi-turn episodes)."""


def spawn_group(cfg: Config, placement: Placement, name: str, actor_cls, *extra_args) -> ActorGroup:
    """Create a frozen group's replicas: `actor_cls(cfg, rank, *extra_args)` in each of the group's slots."""
    # Stateless roles come back after a crash (constructor rerun); the runtime retries the phase.
    restarts = cfg.ray.max_restarts if name in RESTARTABLE_ROLES else 0
    return ActorGroup(name, [actor_cls.options(max_restarts=restarts, **placement.options(name, r)).remote(
                             cfg, r, *extra_args) for r in range(getattr(cfg.ray, name).replicas)])


def spawn_trainers(cfg: Config, placement: Placement, role: str) -> ActorGroup:
    """Create the role's replicas (their constructors load the model); `setup_trainers` joins them up."""
    world = getattr(cfg.ray, role).replicas
    return ActorGroup(role, [TrainingActor.options(**placement.options(role, r)).remote(role, cfg, r, world)
                             for r in range(world)])


def setup_trainers(groups: list[ActorGroup]) -> None:
    """Each role's process group and DeepSpeed engine, on every replica of every role at once."""
    addresses: list = []
    while len(set(addresses)) < len(groups):  # two roles on one host must not draw the same free port
        addresses = [tuple(a) for a in get_fail_fast([group.handles[0].master_address.remote() for group in groups])]
    get_fail_fast([ref for group, (addr, port) in zip(groups, addresses) for ref in group.call("setup", addr, port)])


class Runtime:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.spec: ModeSpec = SPECS[cfg.algorithm.name]
        self.output_dir = cfg.trainer.output_dir
        self.step = 0
        self.history: list[dict] = []
        self.start_metrics: dict = {}
        self.placement: Optional[Placement] = None
        self.groups: dict[str, ActorGroup] = {}
        self.supervisor = Supervisor(self.groups, cfg.ray.step_retries, cfg.ray.placement_timeout_s)
        self.bad_steps = BadStepCounter(cfg.trainer.max_bad_steps)
        self.weights_version = 0
        """The policy step whose weights the rollout engines hold."""
        self.last_checkpoint: Optional[str] = None
        self.last_state: Optional[dict] = None
        """The driver state after the last completed step: what an emergency checkpoint writes."""
        self.trained_this_step = False
        self.tracker = EvalTracker(cfg.algorithm.name, cfg.eval.max_general_drop, cfg.eval.on_general_drop,
                                   cfg.eval.general_baseline, cfg.eval.task_reward)
        self.best_dir: Optional[str] = None
        self.gate_stopped = False
        """The forgetting gate ended the run (eval.on_general_drop: stop); no final/ is written."""
        self.stop_requested = False
        """Set by SIGTERM (`ray job stop`) or Ctrl-C: finish the step, checkpoint, end without the final save."""
        self.resume = False
        self.stop_signal = int(signal.SIGTERM)
        self.memory_report: dict = {}
        self.startup_s: Optional[float] = None
        """Seconds from the start of the run (the `rlhf train` process) to the step loop."""
        module, _, name = self.spec.step.partition(":")
        self.mode = getattr(importlib.import_module(module), name)(cfg, self)  # reads data: bad input fails here
        self.probe = (GeneralProbe.from_config(cfg.eval, load_tokenizer(cfg.model.path, cfg.model.trust_remote_code))
                      if cfg.eval.general_probe else None)
        self.checkpoints: Optional[CheckpointManager] = None

    # ---------------------------------------------------------------- lifecycle
    def group_names(self) -> list[str]:
        return [*self.mode.trained_roles(), *self.mode.frozen_groups()]

    def write_reports(self) -> None:
        """data_report.json; called once the output folder is known to be this run's."""
        os.makedirs(self.output_dir, exist_ok=True)
        logger.info("data: %s", self.mode.data_report)
        with open(os.path.join(self.output_dir, "data_report.json"), "w") as fh:
            json.dump({"train_path": self.cfg.data.train_path, "eval_path": self.cfg.data.eval_path,
                       **self.mode.data_report}, fh, indent=1)

    def start(self, resume: bool = False) -> None:
        cfg = self.cfg
        self.resume = resume or cfg.trainer.resume == "auto"
        self.checkpoints = CheckpointManager(os.path.join(self.output_dir, "checkpoints"), cfg.trainer.keep_checkpoints)
        engine = getattr(self.mode, "engine", None)  # the modes that generate chose their engine kind
        in_process = bool(cfg.rollout.engine_core_in_process)
        group_env = {name: engine_group_env(engine.name, in_process, getattr(cfg.ray, name).num_cpus) if engine else {}
                     for name in ENGINE_GROUPS}
        for role in self.mode.trained_roles():
            group_env[role] = trained_group_env(getattr(cfg.ray, role).num_cpus)
        self.placement = Placement(cfg.ray, self.group_names(), quiet.actor_env(cfg.logging.verbose), group_env)
        # Every constructor (imports, model loads, engine start) runs at once; only then do the trainers
        # meet in their process groups. Spawning group by group made start-up the sum of all of them.
        for role in self.mode.trained_roles():
            self.groups[role] = spawn_trainers(cfg, self.placement, role)
        for name, (actor_cls, extra_args) in self.mode.frozen_groups().items():
            self.groups[name] = spawn_group(cfg, self.placement, name, actor_cls, *extra_args)
        setup_trainers([self.groups[role] for role in self.mode.trained_roles()])
        self.write_placement()
        report = get_fail_fast([self.groups[self.spec.trained[0]].handles[0].memory_report.remote()])[0]
        folded = reference_is_folded(cfg)
        self.memory_report = {"actor_groups": len(self.groups), "reference_folded": folded,
                              "reference_in_policy": reference_copy_in_policy(cfg),
                              "reference_bytes_saved": report["frozen_bytes"] if folded else 0,
                              "trainable_bytes": report["trainable_bytes"]}
        if folded:
            logger.info("reference folded into the policy: %.1f MB of reference weights saved per replica "
                        "(trainable: %.2f MB)", report["frozen_bytes"] / 2**20, report["trainable_bytes"] / 2**20)
        if self.resume:
            self._restore_latest()
        if self.weights_version == 0 and cfg.model.quantization != "none" and "rollout" in self.groups:
            # The engines loaded the full-precision base; the policy computes with its 4-bit copy.
            self.push_weights(version=0)

    def write_placement(self) -> None:
        """Where every actor runs: placement.json, the supervisor's pid record, one log line per group."""
        where = {name: group.where() for name, group in self.groups.items()}
        with open(os.path.join(self.output_dir, "placement.json"), "w") as fh:
            json.dump(where, fh, indent=1)
        self.supervisor.record(where)
        for name, replicas in where.items():
            nodes = sorted({w["node_ip"] for w in replicas})
            logger.info("group %-9s %d replica(s) on %s, pids %s, resources %s", name, len(replicas),
                        ", ".join(nodes), [w["pid"] for w in replicas], replicas[0]["resources"])

    def release(self, name: str) -> None:
        """Kill a group that is no longer needed (e.g. the reference once its log-probs are stored)."""
        for handle in self.groups.pop(name, ActorGroup(name, [])).handles:
            ray.kill(handle, no_restart=True)

    def shutdown(self) -> None:
        for name in SHUTDOWN_ORDER:
            self.release(name)
        if self.placement is not None:
            self.placement.remove()
            self.placement = None

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Called from a signal handler (rlhf.train.stop_on_signals)."""
        self.stop_requested = True
        self.stop_signal = int(signum)

    # ---------------------------------------------------------------- services for the modes
    def phase(self, name: str, fn: Callable[[], T], stateful: tuple[str, ...] = ()) -> T:
        """Run one phase under supervision: restarts of stateless actors, retries, fail-fast waits."""
        if name == "train":
            self.trained_this_step = True
        return self.supervisor.run_phase(name, fn, self._after_restart, lambda: self.last_checkpoint, stateful)

    def push_weights(self, version: int) -> int:
        """The policy's weights into the rollout engines; returns the bytes sent."""
        sent = phases.push_weights(self.groups["policy"], self.groups["rollout"], version)
        self.weights_version = version
        return sent

    def _after_restart(self, role: str) -> None:
        """A restarted actor reran its constructor: engines hold the base weights again."""
        if role == "rollout":
            engines_restarted(self.groups["rollout"])  # the next push rebuilds the sync group
        if role == "rollout" and self.weights_version:
            self.push_weights(self.weights_version)
        self.write_placement()

    # ---------------------------------------------------------------- the loop
    @property
    def evaluating(self) -> bool:
        return self.mode.has_held_out or self.probe is not None

    def run(self, started_at: Optional[float] = None) -> dict:
        """The step loop; `started_at` (wall clock) is when the run began, for `timing/startup_s`."""
        cfg = self.cfg
        fresh = self.step == 0
        self.startup_s = time.time() - started_at if started_at is not None else None
        metrics_log = MetricsLogger(self.output_dir, to_dict(cfg), cfg.logging.wandb, cfg.logging.progress,
                                    cfg.trainer.steps + int(fresh and self.evaluating), start_step=self.step)
        started = time.perf_counter()
        final_dir = None
        try:
            getattr(self.mode, "before_loop", lambda: None)()
            self.last_state = self._state()
            # 0. The held-out metrics of the starting model: what gains and drops are measured against.
            if self.evaluating and fresh:
                self.start_metrics = self.evaluation(0)
                metrics_log.log(0, self.start_metrics)
            while self.step < cfg.trainer.steps:
                self.step += 1
                step_start = time.perf_counter()
                # 1. One step of the mode (its own numbered phases inside).
                out = self._guarded_step()
                # 2. Non-finite numbers: the update was skipped; too many in a row stop the run.
                metrics = out.metrics
                bad = out.bad + train_faults(metrics)
                self.bad_steps.update(self.step, bad, self.last_checkpoint)
                metrics["train/nonfinite_skipped"] = 1 if bad else 0
                metrics["train/nonfinite_steps_total"] = self.bad_steps.total
                metrics["faults/actor_restarts"] = self.supervisor.restarts
                # 3. Held-out evaluation (and the forgetting gate) every eval.every_steps and after the last step.
                if self.evaluating and self.evaluation_due(self.step):
                    metrics.update(self.evaluation(self.step))
                metrics.setdefault("timing/step_s", time.perf_counter() - step_start)
                if self.startup_s is not None and not self.history:
                    metrics["timing/startup_s"] = self.startup_s  # once, on this process's first step
                # 4. Log.
                metrics_log.log(self.step, metrics)
                if out.samples is not None:
                    metrics_log.log_samples(self.step, *out.samples)
                self.history.append(metrics)
                self.last_state = self._state()
                # 5. Checkpoint every save_steps, at the end, and on a stop request.
                last = self.step == cfg.trainer.steps
                if (cfg.trainer.save_steps and self.step % cfg.trainer.save_steps == 0) or last or self.stop_requested:
                    self.phase("checkpoint", self.save_checkpoint)
                if self.stop_requested:
                    logger.warning("stop requested: ended after step %d with checkpoint %s; resubmit with --resume "
                                   "to continue", self.step, self.last_checkpoint)
                    break
                if self.gate_stopped:
                    logger.warning("forgetting gate stopped the run after step %d; the best model within the limit "
                                   "is %s (step %s); no final/ written", self.step, self.best_dir,
                                   self.tracker.best_step)
                    break
            if cfg.trainer.save_hf_model and not (self.stop_requested or self.gate_stopped):
                final_dir = os.path.join(self.output_dir, "final")
                trained = self.groups[self.spec.trained[0]]
                self.phase("save_pretrained", lambda: get_fail_fast(trained.call("save_pretrained", final_dir)))
        finally:
            metrics_log.close()
        return self._summary(time.perf_counter() - started, final_dir)

    def _guarded_step(self) -> StepOutput:
        """The mode's step; a phase that fails for good leaves an emergency checkpoint of the last completed step."""
        self.trained_this_step = False
        try:
            return self.mode.train_step(self.step)
        except TrainingRankDied:
            raise
        except Exception as err:
            saved = self._emergency_checkpoint() if not self.trained_this_step else None
            where = saved or self.last_checkpoint or "none (no checkpoint was written)"
            raise PhaseFailed(f"step {self.step} failed: {err}\nThe last completed step is {self.step - 1}; "
                              f"checkpoint: {where}. Fix the cause and rerun with --resume to continue "
                              f"from step {self.step if saved or self.last_checkpoint else 1}.") from err

    def _emergency_checkpoint(self) -> Optional[str]:
        if self.step <= 1 or self.last_state is None:
            return None
        if self.last_checkpoint and self.last_checkpoint.endswith(f"step_{self.step - 1}"):
            return self.last_checkpoint
        self.step -= 1
        try:
            return self.save_checkpoint(self.last_state)
        except Exception as err:  # the checkpoint must not hide the error that caused it
            logger.error("emergency checkpoint failed: %s", err)
            return None
        finally:
            self.step += 1

    def evaluation_due(self, step: int) -> bool:
        every = self.cfg.eval.every_steps
        return step == self.cfg.trainer.steps or bool(every and step % every == 0)

    def evaluation(self, step: int) -> dict:
        """The mode's held-out metrics, the general probe, their changes since step 0, and the gate."""
        metrics = self.mode.evaluate() if self.mode.has_held_out else {}
        trained = self.groups[self.spec.trained[0]]
        if self.probe is not None:
            metrics.update(self.phase("evaluate", lambda: phases.probe_general(trained, self.probe)))
        verdict = self.tracker.observe(step, metrics)
        if verdict.new_best:
            self.best_dir = phases.save_best(trained, self.output_dir, step, metrics)
        self.gate_stopped = verdict.action == "stop"
        return metrics

    def evaluate_once(self) -> dict:
        """`rlhf eval`: the held-out metrics and the general probe of the loaded model, no training."""
        metrics = self.mode.evaluate() if self.mode.has_held_out else {}
        if self.probe is not None:
            metrics.update(phases.probe_general(self.groups[self.spec.trained[0]], self.probe))
        return metrics

    # ---------------------------------------------------------------- checkpoints
    def _state(self) -> dict:
        return {"step": self.step, "mode": self.mode.state_dict(), "bad_steps": self.bad_steps.state_dict(),
                "eval": self.tracker.state_dict(), "best_dir": self.best_dir,
                "python_rng": repr(random.getstate()), "torch_rng": torch.get_rng_state().tolist()}

    def save_checkpoint(self, state: Optional[dict] = None) -> str:
        """Every trained role's weights and optimizer, and the driver state (that of the current step by default)."""
        staging = self.checkpoints.staging(self.step)
        refs = [ref for role in self.mode.trained_roles()
                for ref in self.groups[role].call("save_checkpoint", os.path.join(staging, role))]
        get_fail_fast(refs)
        self.checkpoints.save_trainer_state(staging, state or self._state())
        self.last_checkpoint = self.checkpoints.commit(self.step, staging)
        return self.last_checkpoint

    def _restore_latest(self) -> None:
        found = self.checkpoints.latest_trainer_state()
        if found is None:
            return
        folder, state = found
        get_fail_fast([ref for role in self.mode.trained_roles()
                       for ref in self.groups[role].call("load_checkpoint", os.path.join(folder, role))])
        self.step = state["step"]
        self.last_checkpoint = folder
        self.bad_steps.load_state_dict(state["bad_steps"])
        self.tracker.load_state_dict(state["eval"])
        self.best_dir = state["best_dir"]
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        self.mode.load_state_dict(state["mode"])
        if "rollout" in self.groups:  # the engines started from the base weights: give them the restored policy
            self.push_weights(version=self.step)
        logger.info("resumed from %s at step %d", folder, self.step)

    # ---------------------------------------------------------------- summary
    def _summary(self, wall_s: float, final_dir: Optional[str]) -> dict:
        keys = [k for k in self.spec.headline if k in self.start_metrics or any(k in r for r in self.history)]
        return {
            "mode": self.spec.name, "steps": self.step, "stopped": self.stop_requested, "stop_signal": self.stop_signal,
            "headline": headline(self.history, self.start_metrics, keys),
            **getattr(self.mode, "summary", dict)(), **self.memory_report,
            "wall_s": wall_s, "startup_s": self.startup_s, "output_dir": self.output_dir, "final_model": final_dir,
            "metrics": os.path.join(self.output_dir, "metrics.jsonl"),
            **({"evaluation": self.tracker.summary(self.best_dir)} if self.evaluating else {}),
        }

