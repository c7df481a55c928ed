"""Every seed the run derives from `trainer.seed`, named, in one place.

Two modes must never disagree on how a step's samples or an eval prompt's answer are drawn, and a
resumed run must draw what the uninterrupted one drew: so each derived seed is a function of the
run seed and a position (step, epoch, engine), never of wall time or call order.
"""
from __future__ import annotations

STEP_STRIDE = 1_000_003
"""A prime larger than any step count: (seed, step) pairs never collide across run seeds."""
EVAL_OFFSET = 7_000_003
"""Held-out sampling: the same draws at every eval point (only the weights change), apart from training's."""
TEACHER_DATA_OFFSET = 5_555_555
"""Offline distillation: the teacher's answers to the train prompts."""
ENGINE_STRIDE = 131
"""Rollout engine i of a call samples with `call_seed * ENGINE_STRIDE + i`."""


def step_seed(seed: int, step: int) -> int:
    """A training step's sampling and mini-batch order (step 1, 2, ...)."""
    return seed * STEP_STRIDE + step


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle of one pass over the training rows."""
    return seed * STEP_STRIDE + epoch


def eval_seed(seed: int) -> int:
    """Held-out generation, every mode and every eval point alike."""
    return EVAL_OFFSET + seed


def teacher_data_seed(seed: int) -> int:
    return TEACHER_DATA_OFFSET + seed


def engine_seed(call_seed: int, engine: int) -> int:
    """Engine `engine`'s share of a generation call seeded `call_seed`."""
    return call_seed * ENGINE_STRIDE + engine
