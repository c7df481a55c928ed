"""Length-sorted, trimmed micro-batches: exact for forwards, token-mean preserving for training."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlhf.masked import masked_mean
from rlhf.models.forward import over_micro_batches, policy_logprobs
from rlhf.records import Experience
from rlhf.training.micro_batches import (
    length_order, plan_micro_batches, real_columns, response_forward, token_weights, trimmed_bounds,
)

# Prompt block P=3 (left-padded), response block R=4 (right-padded).
MASK = torch.tensor([
    [0, 1, 1, 1, 1, 0, 0],   # prompt 2, response 2
    [0, 0, 1, 1, 1, 1, 1],   # prompt 1, response 4
    [0, 1, 1, 1, 1, 1, 0],   # prompt 2, response 3
    [0, 0, 1, 1, 0, 0, 0],   # prompt 1, response 1
])
P = 3


def test_bounds_and_order_by_hand():
    assert real_columns(MASK) == (1, 7)
    assert real_columns(MASK[[0, 3]]) == (1, 5)
    assert trimmed_bounds(MASK[[0, 3]], P) == (1, 5)
    assert trimmed_bounds(MASK[[3]], P) == (2, 4)
    assert length_order(MASK).tolist() == [1, 2, 0, 3]  # lengths 4, 5, 5, 2 -> 5, 5 (stable), 4, 2


def test_token_weights_by_hand():
    # Two micro-batches with 2 and 6 of the 8 tokens: DeepSpeed halves each loss, so x0.5 and x1.5.
    assert token_weights([2.0, 6.0]) == [0.5, 1.5]
    assert token_weights([3.0, 3.0, 3.0]) == [1.0, 1.0, 1.0]
    assert token_weights([0.0, 0.0]) == [1.0, 1.0]


def _tiny_model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def test_sorted_trimmed_forward_equals_plain_forward():
    model = _tiny_model()
    sequences = torch.randint(1, 40, MASK.shape) * MASK
    plain = over_micro_batches(lambda s, a: policy_logprobs(model, s, a, P)[0], 2, sequences, MASK)
    fast = response_forward(lambda s, a, plen: policy_logprobs(model, s, a, plen)[0], 2, sequences, MASK, P)
    response_mask = MASK[:, P:].float()
    assert fast.shape == plain.shape
    assert torch.allclose(fast * response_mask, plain * response_mask, atol=1e-5)


def _experience(advantages: torch.Tensor) -> Experience:
    response_mask = MASK[:, P:].float()
    zeros = torch.zeros_like(response_mask)
    return Experience(torch.randint(1, 40, MASK.shape) * MASK, MASK, response_mask, zeros, advantages, zeros,
                      None, P)


def test_planned_micro_batches_keep_the_mini_batch_token_mean():
    advantages = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    batch = _experience(advantages)
    plan = plan_micro_batches(batch, 2)
    assert [len(m) for m, _ in plan] == [2, 2]
    # Longest rows (1, 2) together, trimmed to columns 1..6; then rows 0 and 3, to columns 1..4.
    assert plan[0][0].sequences.shape == (2, 6) and plan[0][0].prompt_len == 2
    assert plan[1][0].sequences.shape == (2, 4) and plan[1][0].response_mask.shape == (2, 2)
    assert plan[1][0].advantages.tolist() == [[0.0, 1.0], [12.0, 13.0]]
    # What DeepSpeed computes: the mean over micro-batches of weight * micro-batch token mean.
    accumulated = sum(w * masked_mean(m.advantages, m.response_mask) for m, w in plan) / len(plan)
    assert torch.isclose(accumulated, masked_mean(advantages, batch.response_mask))
