"""Knowledge distillation: the policy (the student) learns from a frozen, usually larger teacher.

Groups: policy (the student, trained on DeepSpeed), teacher (frozen `model.teacher_path`: its
full-vocabulary log-probs, and a rollout engine of the student's engine kind) and rollout (the
student's engines, which get its weights through the shared weight push).

`algorithm.distill.mode`:
- `on_policy` (GKD, Agarwal et al. 2024): each step the student samples `rollout.samples_per_prompt`
  answers to `trainer.prompts_per_step` prompts, the teacher returns its distribution at every
  sampled position, and the student takes optimizer steps (mini-batches of `trainer.mini_batch_size`)
  on the token mean of `algorithm.distill.divergence` there; then its weights go to the engines.
  With `rollout.env`, each sample is an episode (rlhf.rollout.episodes): the teacher scores the
  student's tokens only, and the held-out evaluation plays the student's and the teacher's episodes.
- `offline` (sequence-level KD, Kim & Rush 2016): before the first step the teacher answers every
  train prompt (`rollout.samples_per_prompt` samples each) through its rollout engine; the answers
  are written to `OUTPUT_DIR/teacher_data.jsonl` ({prompt, response}, counted in data_report.json)
  and the student is fine-tuned on them with the SFT mode's steps and loss (`SFTSteps`).

Held-out metrics (step 0, every `eval.every_steps`, the end), both modes: the student samples one
answer per held-out prompt with a fixed seed; `eval/distill/divergence` (and both KLs) is measured
on the student's own samples, where on-policy distillation trains; `eval/student/task_score` and
`eval/teacher/task_score` score the student's and the teacher's answers with `reward.function`;
`eval/student/tokens_per_s` and `eval/teacher/tokens_per_s` time that generation, same engine kind.

Departures from GKD: no mixing in of a fixed dataset (its lambda is 1, purely on-policy); one
divergence per run rather than a schedule; sampling temperature and divergence temperature are
separate keys (`rollout.temperature`, `algorithm.distill.temperature`).
"""
from __future__ import annotations

import json
import logging
import os
import time

import torch

from actors.env import EnvActor
from actors.frozen import TeacherActor
from actors.groups import ActorGroup
from actors.rollout import RolloutActor
from rlhf.assets.datasets import write_jsonl
from rlhf.config import Config, ConfigError
from rlhf.data.examples import load_sft_examples, train_and_eval
from rlhf.data.prompts import PromptSampler, _parse_prompt, load_prompts, prompt_tokenizer
from rlhf.data.reader import ReadReport, read_rows
from rlhf.models.loading import context_limit, load_tokenizer
from rlhf.modes import phases
from rlhf.modes.runtime import Runtime, StepOutput
from rlhf.modes.sft import SFTSteps
from rlhf.records import DistillBatch, RolloutBatch
from rlhf.rewards.columns import columns_as_lists
from rlhf.rewards.function import FunctionReward
from rlhf.rollout.episodes import uses_reward_source, with_episode_rewards
from rlhf.rollout.select import choose_engine
from rlhf.seeds import eval_seed, step_seed, teacher_data_seed

logger = logging.getLogger(__name__)

TEACHER_DATA_FILE = "teacher_data.jsonl"


def check_same_tokenizer(student_path: str, teacher_path: str, trust_remote_code: bool) -> None:
    """Distillation compares distributions token by token: both models must share one vocabulary."""
    from transformers import AutoConfig

    student, teacher = load_tokenizer(student_path, trust_remote_code), load_tokenizer(teacher_path, trust_remote_code)
    if student.get_vocab() != teacher.get_vocab() or student.all_special_ids != teacher.all_special_ids:
        raise ConfigError(f"model.teacher_path: the tokenizer of {teacher_path} differs from the student's "
                          f"({student_path}); distillation needs the same tokenizer")
    sizes = [AutoConfig.from_pretrained(p, trust_remote_code=trust_remote_code).vocab_size
             for p in (student_path, teacher_path)]
    if sizes[0] != sizes[1]:
        raise ConfigError(f"model.teacher_path: vocab_size {sizes[1]} differs from the student's {sizes[0]}")


def teacher_scored_batch(teacher: ActorGroup, rollout: RolloutBatch) -> DistillBatch:
    """The rollout with the teacher's [B, R, V] log-probs at its response positions (rows split over replicas)."""
    vocab_logprobs = phases.gather(phases.submit_forward(teacher, rollout, "forward_vocab"))
    return DistillBatch(rollout.sequences, rollout.attention_mask, rollout.response_mask, vocab_logprobs,
                        rollout.prompt_len)


def teacher_dataset_rows(rollout: RolloutBatch, raw_prompts: dict[int, object]) -> tuple[list[dict], int]:
    """{prompt, response} rows of the teacher's answers (prompt as in the source file); empty answers left out."""
    rows = [{"prompt": raw_prompts[row], "response": text}
            for row, text in zip(rollout.prompt_index, rollout.responses) if text.strip()]
    return rows, len(rollout) - len(rows)


class DistillMode:
    def __init__(self, cfg: Config, runtime: Runtime) -> None:
        self.cfg, self.runtime = cfg, runtime
        data, model = cfg.data, cfg.model
        self.tokenizer = prompt_tokenizer(model.path, data, model.trust_remote_code)
        check_same_tokenizer(model.path, model.teacher_path, model.trust_remote_code)
        limits = [context_limit(p, model.trust_remote_code) for p in (model.path, model.teacher_path)]
        limit = min((x for x in limits if x is not None), default=None)
        self.train_prompts, self.eval_prompts, self.data_report = train_and_eval(
            lambda path: load_prompts(path, self.tokenizer, data, limit, cfg.rollout.max_new_tokens), data,
            cfg.trainer.seed)
        self.sampler = PromptSampler(self.train_prompts, cfg.trainer.seed, data.shuffle)
        self.offline = cfg.algorithm.distill.mode == "offline"
        self.sft: SFTSteps | None = None
        """Offline: SFT's steps over the teacher's answers (built once they exist)."""
        self.pending_sampler_state: dict | None = None
        self.task_score = FunctionReward(cfg.reward.function)
        # One engine kind for student and teacher, so their generation speeds compare like for like.
        self.engine = choose_engine(cfg.rollout.engine, model.path, cfg.ray.rollout.num_gpus)
        self.engines_warm = False

    def trained_roles(self) -> list[str]:
        return ["policy"]

    def frozen_groups(self) -> dict[str, tuple]:
        env = {"env": (EnvActor, ())} if self.cfg.rollout.env else {}  # multi-turn: the environments' group
        return {"teacher": (TeacherActor, (self.engine.name,)), "rollout": (RolloutActor, (self.engine.name, False)),
                **env}

    @property
    def has_held_out(self) -> bool:
        return bool(self.eval_prompts)

    def summary(self) -> dict:
        return {"rollout_engine": f"{self.engine.name} ({self.engine.reason}), student and teacher"}

    def before_loop(self) -> None:
        if self.offline:
            self.sft = self._teacher_dataset()
            if self.pending_sampler_state is not None:
                self.sft.sampler.load_state_dict(self.pending_sampler_state)

    def state_dict(self) -> dict:
        sampler = self.sft.sampler if self.offline and self.sft else self.sampler
        return {"sampler": sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.offline:  # the SFT rows exist once the teacher has answered (before_loop)
            self.pending_sampler_state = state["sampler"]
        else:
            self.sampler.load_state_dict(state["sampler"])

    # ------------------------------------------------------------------ offline
    def _teacher_dataset(self) -> SFTSteps:
        """The teacher answers every train prompt through its engine; the answers become SFT data."""
        cfg = self.cfg
        path = os.path.join(cfg.trainer.output_dir, TEACHER_DATA_FILE)
        start = time.perf_counter()
        rt = self.runtime
        rollout = rt.phase("teacher_data", lambda: phases.generate(
            cfg, rt.groups["teacher"], self.tokenizer, self.train_prompts, cfg.rollout.samples_per_prompt,
            seed=teacher_data_seed(cfg.trainer.seed), policy_version=0), stateful=("teacher",))
        seconds = time.perf_counter() - start
        raw = dict(read_rows(cfg.data.train_path, _parse_prompt(cfg.data.prompt_key), "skip", ReadReport()))
        rows, empty = teacher_dataset_rows(rollout, raw)
        write_jsonl(path, rows)
        examples, counts = load_sft_examples(path, self.tokenizer, cfg.data)
        scores = self.task_score.score(rollout.prompts, rollout.responses)
        report = {"path": path, "rows_written": len(rows), "empty_answers_left_out": empty,
                  "teacher_task_score": float(scores.mean()), "generate_s": round(seconds, 3),
                  **{f"sft_{k}": v for k, v in counts.items()}}
        logger.info("offline distillation data: %s", report)
        report_path = os.path.join(cfg.trainer.output_dir, "data_report.json")
        with open(report_path) as fh:
            data_report = json.load(fh)
        with open(report_path, "w") as fh:
            json.dump({**data_report, "teacher_data": report}, fh, indent=1)
        return SFTSteps(cfg, self.tokenizer.pad_token_id, examples, None)

    # ------------------------------------------------------------------ the step
    def train_step(self, step: int) -> StepOutput:
        rt = self.runtime
        groups = rt.groups
        if self.offline:  # SFT on the teacher's answers; the engines get the weights when evaluation needs them
            return StepOutput(rt.phase("train", lambda: self.sft.train_step(groups["policy"])))
        cfg, timings = self.cfg, {}
        # 1. Generate: prompts, and the student's samples from the engines (which hold its current weights).
        prompts = self.sampler.next_batch(cfg.trainer.prompts_per_step)
        start = time.perf_counter()
        rollout = rt.phase("generate", lambda: phases.generate(
            cfg, groups["rollout"], self.tokenizer, prompts, cfg.rollout.samples_per_prompt,
            seed=step_seed(cfg.trainer.seed, step), policy_version=step - 1, env=groups.get("env")),
            stateful=("rollout", "env"))
        timings["generate"] = time.perf_counter() - start
        # 2. Score: the teacher's distribution at every sampled position (with episodes, the response mask
        #    covers the student's own tokens only: observations are context, never distilled).
        start = time.perf_counter()
        batch = rt.phase("teacher", lambda: teacher_scored_batch(groups["teacher"], rollout), stateful=("teacher",))
        timings["teacher"] = time.perf_counter() - start
        # 3. Train: optimizer steps on the divergence, one per mini-batch.
        start = time.perf_counter()
        mini = cfg.trainer.mini_batch_size
        metrics = rt.phase("train", lambda: phases.train_on(
            groups["policy"], [batch.select(slice(i, i + mini)) for i in range(0, len(batch), mini)]))
        timings["train"] = time.perf_counter() - start
        # 4. Push weights: the student's new weights into its engines.
        start = time.perf_counter()
        metrics["weight_sync/megabytes"] = rt.phase("weight_sync", lambda: rt.push_weights(step)) / 2**20
        timings["weight_sync"] = time.perf_counter() - start
        metrics["response_length/mean"] = float(rollout.response_mask.sum(dim=1).float().mean())
        if rollout.episodes is not None:
            metrics.update(rollout.episodes.metrics)
        return StepOutput({**metrics, **{f"timing/{k}_s": v for k, v in timings.items()}})

    def task_scores(self, rollout: RolloutBatch) -> torch.Tensor:
        """[B] task score of answers: `reward.function`'s; with episodes, the environment's rewards plus
        `rollout.env_reward_weight` times the function's (when one is configured)."""
        function = (self.task_score.score(rollout.prompts, rollout.responses, columns=columns_as_lists(rollout.columns))
                    if uses_reward_source(self.cfg.rollout) else None)
        return with_episode_rewards(self.cfg.rollout, rollout, function)

    # ------------------------------------------------------------------ held out
    def evaluate(self) -> dict:
        cfg, rt = self.cfg, self.runtime
        groups, step = rt.groups, rt.step
        if rt.weights_version != step:
            rt.phase("weight_sync", lambda: rt.push_weights(step))
        metrics = {}
        answers = {}
        # 1. One answer per held-out prompt from the student and from the teacher, same seed and engine kind.
        for who, role in (("student", "rollout"), ("teacher", "teacher")):
            if not self.engines_warm:  # an engine's first call pays one-time costs; keep them out of tokens/s
                rt.phase("evaluate", lambda: phases.generate(cfg, groups[role], self.tokenizer, self.eval_prompts[:2],
                                                             1, seed=0, policy_version=step, env=groups.get("env")),
                         stateful=(role, "env"))
            start = time.perf_counter()
            rollout = rt.phase("evaluate", lambda: phases.generate(
                cfg, groups[role], self.tokenizer, self.eval_prompts, cfg.eval.samples_per_prompt,
                seed=eval_seed(cfg.trainer.seed), policy_version=step, env=groups.get("env")), stateful=(role, "env"))
            seconds = time.perf_counter() - start
            answers[who] = rollout
            metrics[f"eval/{who}/tokens_per_s"] = float(rollout.response_mask.sum()) / seconds
            metrics[f"eval/{who}/task_score"] = float(self.task_scores(rollout).float().mean())
            if rollout.episodes is not None:
                metrics.update({f"eval/{who}/{k}": v for k, v in rollout.episodes.metrics.items()})
        self.engines_warm = True
        # 2. Divergence to the teacher on the student's own answers (padded rows weigh 0).
        batch = rt.phase("evaluate", lambda: teacher_scored_batch(groups["teacher"], answers["student"]),
                         stateful=("teacher",))
        size = phases.padded_size(len(batch), cfg.ray.policy.replicas, cfg.trainer.micro_batch_size)
        metrics.update(phases.evaluate_on(groups["policy"], batch.padded_to(size)))
        return metrics
