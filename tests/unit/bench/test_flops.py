"""The FLOP counts behind the benchmark's per-phase GFLOP/s, against hand-worked numbers."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench.report import phase_table
from bench.flops import ModelShape, forward_flops, matmul_peak_gflops, ppo_phase_flops, shape_of


@pytest.mark.parametrize("tied", [False, True])
def test_matmul_weights_are_the_projections_and_the_head_not_the_embedding_table(tied):
    cfg = LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied)
    shape = shape_of(LlamaForCausalLM(cfg))
    # q, k, v, o: 4 * 8 * 8 = 256; gate, up, down: 3 * 8 * 16 = 384; the head 10 * 8 = 80 (tied or not).
    assert shape == ModelShape(matmul_params=720, layers=1, hidden=8, vocab=10)
    assert shape.value_model() == ModelShape(720 - 80 + 8, 1, 8, 1)


def test_forward_flops_count_weights_and_attention():
    # 3 tokens, each attending to 5 positions: 3 * (2 * 100 + 4 * 2 layers * 4 hidden * 5) = 3 * 360.
    assert forward_flops(ModelShape(100, 2, 4, 10), tokens=3, context=5) == 1080


def test_ppo_phase_flops_by_hand():
    policy = ModelShape(100, 1, 2, 10)  # its critic: 100 - 20 + 2 = 82 matmul weights
    # 2 samples of 6 tokens, 2 of them generated (so a 4-token prompt), one epoch, with a critic:
    # generate: prefill 4 * (200 + 4*2*2) = 864, decode 2 * (200 + 4*2*5) = 480, per sample 1344;
    # a whole-sequence forward: policy 6 * (200 + 4*2*3) = 1344, critic 6 * (164 + 24) = 1128;
    # experience: reference + critic = 2472; train: 3 * (1344 + 1128) = 7416.
    flops = ppo_phase_flops(policy, samples=2, sequence_len=6, response_len=2, epochs=1, with_critic=True,
                            policy_recomputes=False)
    assert flops == {"generate": 2 * 1344, "experience": 2 * 2472, "train": 2 * 7416}
    # GRPO recomputing the old log-probs: no critic, one more policy forward in experience; 2 epochs.
    flops = ppo_phase_flops(policy, samples=2, sequence_len=6, response_len=2, epochs=2, with_critic=False,
                            policy_recomputes=True)
    assert flops == {"generate": 2 * 1344, "experience": 2 * 2 * 1344, "train": 2 * 2 * 3 * 1344}


def test_matmul_peak_is_a_measured_rate():
    assert matmul_peak_gflops(torch.float32, size=64, seconds=0.05) > 0


def test_phase_table_shows_achieved_rate_and_share_of_the_runs_precision_peak():
    ours = {"phases": [("generate", 0.5, 0.25), ("weight_sync", 0.5, 0.25), ("step", 2.0, 1.0)],
            "phase_gflop": {"generate": 10.0, "step": 40.0}}
    text = phase_table(ours, {"fp32": 100.0, "bf16": 400.0}, "bf16")
    assert "| generate | 0.500 | 25% | 10.00 | 20.0 | 5.0% |" in text  # 10 GFLOP in 0.5 s of a 400 peak
    assert "| weight_sync | 0.500 | 25% | | | |" in text
    assert "| step | 2.000 | 100% | 40.00 | 20.0 | 5.0% |" in text
    assert "fp32 100 GFLOP/s, bf16 400 GFLOP/s" in text
    assert "GFLOP" not in phase_table(ours)  # no peak measured: the time columns only
