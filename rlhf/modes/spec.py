"""What each mode is, in one table: the record every other table is derived from.

`SPECS[algorithm.name]` says which roles the mode trains and which it keeps frozen, whether it
generates (rollout engines) and scores (a reward source), its held-out target metric, its own
config section and the class holding its step and state. From it: the schema's list of modes
and its per-mode checks (`Config.validate`), the driver choice (`rlhf.modes.build_runtime`),
the evaluation target (`rlhf.evaluation.tracker`) and the run summary's headline.

No imports from the rest of rlhf: the config schema reads this module.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModeSpec:
    name: str
    """`algorithm.name`."""
    step: str
    """`module:Class` of the mode's step and state (imported on use: it pulls in Ray and torch)."""
    trained: tuple[str, ...]
    """Roles trained on DeepSpeed, in checkpoint order; the first is the model saved to final/.
    A mode may leave a later one out for a config (PPO trains no critic without GAE)."""
    frozen: tuple[str, ...]
    """Frozen roles the mode may start (a mode leaves some out for a config, e.g. no reference with simpo)."""
    generates: bool
    """Samples from rollout engines that receive the policy's weights."""
    scores: bool
    """Scores samples with `reward.source`."""
    target: str
    """Held-out metric the forgetting gate and `rlhf eval` judge the run by."""
    higher_is_better: bool
    section: str
    """The config section holding the mode's own knobs."""
    headline: tuple[str, ...]
    """Metrics the run summary prints at the start and at the end."""

    @property
    def objectives(self) -> tuple[tuple[str, str], ...]:
        """Keys of rlhf.algorithms.objectives.OBJECTIVES this mode uses: (mode, trained role)."""
        return tuple((self.name, role) for role in self.trained)


SPECS: dict[str, ModeSpec] = {spec.name: spec for spec in (
    ModeSpec("ppo", "rlhf.modes.ppo:PPOMode", ("policy", "critic"), ("reference", "reward", "rollout"),
             generates=True, scores=True, target="eval/reward/mean", higher_is_better=True, section="algorithm",
             headline=("reward/mean", "kl/mean", "eval/reward/mean")),
    ModeSpec("sft", "rlhf.modes.sft:SFTMode", ("policy",), (), generates=False, scores=False,
             target="eval/sft/loss", higher_is_better=False, section="data",
             headline=("sft/loss", "eval/sft/loss")),
    ModeSpec("rm", "rlhf.modes.reward_model:RewardModelMode", ("reward",), (), generates=False, scores=False,
             target="eval/rm/accuracy", higher_is_better=True, section="data",
             headline=("rm/accuracy", "eval/rm/accuracy")),
    ModeSpec("dpo", "rlhf.modes.dpo:DPOMode", ("policy",), ("reference",), generates=False, scores=False,
             target="eval/dpo/loss", higher_is_better=False, section="algorithm.dpo",
             headline=("rewards/accuracy", "rewards/margin", "eval/rewards/accuracy", "eval/rewards/margin")),
    ModeSpec("rlaif", "rlhf.modes.rlaif:RLAIFMode", ("policy",), ("reference", "reward", "rollout"),
             generates=True, scores=True, target="eval/win_rate", higher_is_better=True, section="algorithm.dpo",
             headline=("reward/mean", "eval/win_rate", "eval/reward/mean")),
    ModeSpec("distill", "rlhf.modes.distill:DistillMode", ("policy",), ("teacher", "rollout"),
             generates=True, scores=False, target="eval/distill/divergence", higher_is_better=False,
             section="algorithm.distill",
             headline=("distill/divergence", "sft/loss", "eval/distill/divergence", "eval/student/task_score",
                       "eval/teacher/task_score", "eval/student/tokens_per_s", "eval/teacher/tokens_per_s")),
)}
"""algorithm.name -> its spec."""

MODES = tuple(SPECS)
