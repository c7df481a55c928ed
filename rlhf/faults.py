"""What the driver does when something goes wrong: the decisions, kept free of Ray.

- Non-finite numbers: a step whose advantages, losses or gradients are NaN/inf skips its
  update (the weights keep their last finite values); `BadStepCounter` stops the run after
  `trainer.max_bad_steps` such steps in a row, pointing at the last good checkpoint.
- Actor deaths: stateless roles (rollout engines, reference, reward) are restarted by Ray and
  the phase is retried; a training rank cannot rejoin its live process group, so its death
  ends the run (`TrainingRankDied`) and the job is resubmitted with resume.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

# Roles whose actors hold no training state: Ray may restart them and the phase is retried.
RESTARTABLE_ROLES = ("rollout", "reference", "reward", "teacher", "env")
# Roles whose replicas train in one process group: never restarted, their death ends the run.
TRAINED_ROLES = ("policy", "critic")


class TrainingRankDied(RuntimeError):
    """A policy or critic replica died: the run cannot continue in-process."""


class TooManyBadSteps(RuntimeError):
    """Too many consecutive steps with non-finite numbers."""


class PhaseFailed(RuntimeError):
    """A phase failed for good (a reward source down after its retries, an actor beyond its restarts);
    the message names the cause and the checkpoint to resume from."""


def train_faults(train_metrics: dict[str, float]) -> list[str]:
    """Names of a step's train metrics that say its update did not happen cleanly: an optimizer step
    skipped for non-finite gradients, or a non-finite loss."""
    bad = [k for k, v in train_metrics.items() if k.endswith("/skipped_optimizer_steps") and v > 0]
    return bad + [k for k, v in train_metrics.items()
                  if k.endswith("/loss") and not k.startswith("eval/") and isinstance(v, float) and not math.isfinite(v)]


def nonfinite_names(tensors: dict[str, Optional[torch.Tensor]], mask: Optional[torch.Tensor] = None) -> list[str]:
    """Names of the tensors holding NaN or inf where `mask` is nonzero (everywhere without a mask).

    Positions outside the mask (padding, samples already dropped for a bad reward) are ignored:
    they never reach a loss.
    """
    bad = []
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        finite = torch.isfinite(tensor)
        if mask is not None and tensor.shape == mask.shape:
            finite = finite | (mask == 0)
        if not bool(finite.all()):
            bad.append(name)
    return bad


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every entry of every tensor is finite (a trainer's gradients before its optimizer step).
    A tensor's smallest and largest entries are finite exactly when all its entries are (NaN propagates
    through both), and finding them makes no boolean copy of the tensor: 16 ms against 84 ms for
    `isfinite(t).all()` over the 50M model's bf16 gradients."""
    extremes = [x.float() for t in tensors if t.numel() for x in torch.aminmax(t)]
    return not extremes or bool(torch.stack(extremes).isfinite().all())


def dead_role_message(role: str, rank: int, phase: str, last_checkpoint: Optional[str]) -> str:
    where = last_checkpoint or "none yet (the run restarts from step 0)"
    return (f"{role} replica {rank} died during {phase}. A training rank cannot rejoin its process group, "
            f"so the run stops here; resubmit the same job with --resume (or trainer.resume=auto) to continue "
            f"from the last complete checkpoint: {where}")


class BadStepCounter:
    """Counts consecutive bad steps; raises once `limit` is reached."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.total = 0

    def update(self, step: int, reasons: list[str], last_checkpoint: Optional[str]) -> None:
        """`reasons` empty means a good step. Raises TooManyBadSteps at the limit."""
        if not reasons:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.total += 1
        if self.in_a_row >= self.limit:
            where = last_checkpoint or "none (no checkpoint was written yet)"
            raise TooManyBadSteps(
                f"step {step}: {self.in_a_row} steps in a row had non-finite values ({', '.join(reasons)}) and "
                f"skipped their update (trainer.max_bad_steps={self.limit}); the weights were never written "
                f"with them. Last good checkpoint: {where}"
            )

    def state_dict(self) -> dict:
        return {"in_a_row": self.in_a_row, "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.in_a_row, self.total = int(state["in_a_row"]), int(state["total"])
