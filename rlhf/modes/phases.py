"""The phases every mode is made of, each one call on the actor groups: generate, score, reference
log-probs, train on a group, push the policy's weights, evaluate, probe.

Rows are split over a group's replicas by one helper (`split_rows`), every wait is the
supervisor's fail-fast one, and scores are clipped to `reward.clip` here, so PPO, RLAIF and
evaluation see the same numbers. Modes call these inside `Runtime.phase` for restarts and retries.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

import torch

from actors.groups import ActorGroup
from actors.supervisor import get_fail_fast
from rlhf.config import Config
from rlhf.data.prompts import Prompt
from rlhf.evaluation.probe import GeneralProbe
from rlhf.masked import masked_sum
from rlhf.records import PreferenceBatch, RolloutBatch, TrainStats
from rlhf.rewards.columns import score_args
from rlhf.rollout.batch import collate_rollout
from rlhf.rollout.dispatch import generate_on_engines
from rlhf.rollout.sampling import engine_sampling
from rlhf.rollout.weight_sync import weight_sync_of

logger = logging.getLogger(__name__)


def split_rows(n: int, replicas: int) -> list[torch.Tensor]:
    """Row indices of each replica: `n` rows in contiguous, near-equal parts (none empty when n >= replicas)."""
    return [part for part in torch.tensor_split(torch.arange(n), replicas)]


def padded_size(n: int, replicas: int, micro_batch_size: int) -> int:
    """n rounded up to a multiple of replicas * micro_batch_size (equal micro-batch counts per replica)."""
    unit = replicas * micro_batch_size
    return -(-n // unit) * unit


# ------------------------------------------------------------------------------------ generate
def generate(cfg: Config, engines: ActorGroup, tokenizer, prompts: list[Prompt], n: int, seed: int,
             policy_version: int, env: Optional[ActorGroup] = None) -> RolloutBatch:
    """`n` samples per prompt from the rollout engines (prompts split evenly over them); engine i
    samples with `rlhf.seeds.engine_seed(seed, i)`, so a resumed or retried call draws the same samples.
    With `rollout.env`, `n` episodes per prompt played on the engines and the environments' group `env`."""
    if cfg.rollout.env:
        from actors.env import EnvironmentGroup
        from rlhf.rollout.episodes import generate_episode_rollout

        return generate_episode_rollout(cfg.rollout, engines.handles, EnvironmentGroup(env, get_fail_fast), tokenizer,
                                        prompts, engine_sampling(cfg.rollout, n, seed), n, policy_version,
                                        get_fail_fast)
    prompt_ids = [p.token_ids for p in prompts]
    generations = generate_on_engines(engines.handles, prompt_ids, engine_sampling(cfg.rollout, n, seed))
    return collate_rollout(prompt_ids, [p.text for p in prompts], [p.row for p in prompts], generations, tokenizer,
                           policy_version=policy_version, prompt_columns=[p.columns for p in prompts])


# ------------------------------------------------------------------------------------ score
def submit_scores(reward: ActorGroup, rollout: RolloutBatch) -> list:
    """One `score` call per reward replica on its share of the rows; returns the object refs."""
    return reward.call_each("score", [score_args(rollout, rows)
                                      for rows in split_rows(len(rollout), len(reward)) if len(rows)])


def clipped(scores: torch.Tensor, clip: Optional[float]) -> torch.Tensor:
    """Scores [B] clamped to [-clip, clip] (`reward.clip`; None leaves them); NaN stays NaN (counted as invalid)."""
    scores = scores.float()
    return scores if clip is None else scores.clamp(-clip, clip)


def score(reward: ActorGroup, rollout: RolloutBatch, clip: Optional[float]) -> torch.Tensor:
    """One score per sample [B] from the reward source, clipped to `reward.clip`."""
    return clipped(torch.cat(get_fail_fast(submit_scores(reward, rollout))), clip)


def warn_nonfinite(scores: torch.Tensor, step: int) -> int:
    """A console warning when scores are NaN/inf (they are left out of the update); returns the count."""
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        logger.warning("step %d: %d of %d scores (%.0f%%) are NaN/inf and were left out (reward/invalid)", step,
                       bad, len(scores), 100 * bad / max(1, len(scores)))
    return bad


# ------------------------------------------------------------------------------------ forwards
def submit_forward(group: ActorGroup, rollout: RolloutBatch, method: str = "forward") -> list:
    """Per-token forward (log-probs or values) of the rollout on `group`, rows split over its replicas."""
    rows = split_rows(len(rollout), len(group))
    return group.call_each(method, [(rollout.sequences[r], rollout.attention_mask[r], rollout.prompt_len)
                                    for r in rows if len(r)])


def gather(refs: list) -> torch.Tensor:
    """The replicas' row blocks, concatenated in order (fail-fast wait)."""
    return torch.cat(get_fail_fast(refs))


def preference_reference_logps(reference: ActorGroup, batch: PreferenceBatch,
                               method: str = "forward") -> tuple[torch.Tensor, torch.Tensor]:
    """Summed reference log-probs of the chosen and the rejected responses, [B] each.

    Both blocks go out together, rows split over the replicas of `reference`: the reference group
    (`forward`), or the policy group with its adapters disabled (`forward_reference`).
    """
    sequences = torch.cat([batch.chosen, batch.rejected])
    attention_mask = torch.cat([batch.chosen_attention_mask, batch.rejected_attention_mask])
    response_mask = torch.cat([batch.chosen_response_mask, batch.rejected_response_mask])
    # Untrimmed: the policy's DPO loss runs these rows untrimmed, and at step 0 (or with adapters
    # disabled) policy and reference must agree exactly, not to float rounding.
    refs = reference.call_each(method, [(sequences[r], attention_mask[r], batch.prompt_len, False)
                                        for r in split_rows(len(sequences), len(reference)) if len(r)])
    logps = masked_sum(gather(refs), response_mask, dim=-1)
    return logps[:len(batch)], logps[len(batch):]


# ------------------------------------------------------------------------------------ train
def train_groups(groups: dict[str, ActorGroup], per_role_mini_batches: dict[str, list]) -> dict[str, float]:
    """One optimizer step per global mini-batch on every named group at once (policy and critic in
    parallel), each mini-batch split evenly over the group's replicas; merged metrics."""
    refs = {}
    for role, mini_batches in per_role_mini_batches.items():
        group = groups[role]
        shards = [mb.split(len(group)) for mb in mini_batches]
        per_replica = [[shard[r] for shard in shards] for r in range(len(group))]
        refs[role] = group.call_each("train", [(s,) for s in per_replica])
    stats = iter(get_fail_fast([ref for role_refs in refs.values() for ref in role_refs]))
    metrics: dict[str, float] = {}
    for role_refs in refs.values():
        metrics.update(TrainStats.merge([next(stats) for _ in role_refs]))
    return metrics


def train_on(group: ActorGroup, mini_batches: list) -> dict[str, float]:
    """One optimizer step per global mini-batch on one group."""
    return train_groups({group.name: group}, {group.name: mini_batches})


def evaluate_on(group: ActorGroup, batch) -> dict[str, float]:
    """The objective's metrics on a held-out batch (its length a multiple of replicas * micro-batch)."""
    stats = get_fail_fast(group.call_each("evaluate", [(shard,) for shard in batch.split(len(group))]))
    return {f"eval/{k}": v for k, v in TrainStats.merge(stats).items()}


# ------------------------------------------------------------------------------------ weights
def push_weights(policy: ActorGroup, engines: ActorGroup, version: int) -> int:
    """The policy's full weights (gathered from ZeRO-3 shards on rank 0, LoRA merged) into every
    engine, in place, by `rollout.weight_sync` (rlhf.rollout.weight_sync); returns the bytes sent."""
    return weight_sync_of(policy, engines, get_fail_fast).push(policy, engines, version, get_fail_fast)


# ------------------------------------------------------------------------------------ evaluation
def probe_general(policy: ActorGroup, probe: GeneralProbe) -> dict:
    """The general-ability probe on the policy replicas (each runs every row; rank 0 answers)."""
    return probe.metrics(get_fail_fast(policy.call("general_probe", *probe.actor_args()))[0])


def save_best(policy: ActorGroup, output_dir: str, step: int, metrics: dict) -> str:
    """The evaluated model into output_dir/best (Hugging Face format, or PEFT adapters), with best.json."""
    folder = os.path.join(output_dir, "best")
    get_fail_fast(policy.call("save_pretrained", folder))
    with open(os.path.join(folder, "best.json"), "w") as fh:
        json.dump({"step": step, **{k: v for k, v in metrics.items() if k.startswith("eval/")}}, fh, indent=1)
    logger.info("best model within the general-drop limit: step %d, saved to %s", step, folder)
    return folder
