"""Eager attention for the trained forwards of short rows on CPU in low precision (rlhf/models/attention.py)."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from rlhf.models.attention import EAGER_MAX_WIDTH, attention_for_width, prefers_eager_attention
from rlhf.models.forward import policy_logprobs, response_values

SHAPE = dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, attn_implementation="sdpa")


def _model(cls=LlamaForCausalLM, dtype=torch.bfloat16, **extra):
    torch.manual_seed(0)
    model = cls(LlamaConfig(**SHAPE, **extra)).to(dtype)
    assert model.config._attn_implementation == "sdpa"
    return model


def _rows(width=12):
    sequences = torch.randint(1, 40, (3, width))
    mask = torch.ones_like(sequences)
    mask[0, :4] = 0  # left padding: the eager kernel gets the same padding mask
    mask[1, -3:] = 0
    return sequences * mask, mask


def _kernels_seen(model, run) -> list[str]:
    seen = []
    attention = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer = attention.model.layers[0].self_attn
    handle = layer.register_forward_pre_hook(lambda module, args: seen.append(module.config._attn_implementation))
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_the_switch_covers_trained_short_low_precision_cpu_forwards_only():
    bf16 = _model()
    assert prefers_eager_attention(bf16, 140)
    assert prefers_eager_attention(bf16, EAGER_MAX_WIDTH)
    assert not prefers_eager_attention(bf16, EAGER_MAX_WIDTH + 1)  # sdpa wins on wide rows
    with torch.no_grad():
        assert not prefers_eager_attention(bf16, 140)  # forwards without gradients were even: left alone
    assert not prefers_eager_attention(_model(dtype=torch.float32), 140)
    bf16.gradient_checkpointing_enable()
    assert not prefers_eager_attention(bf16, 140)  # a recomputed layer must run the kernel it first ran
    eager = _model()
    eager.config._attn_implementation = "eager"
    assert not prefers_eager_attention(eager, 140)  # only sdpa is switched (others are the user's choice)


def test_a_trained_forward_runs_eager_attention_and_restores_sdpa_after():
    model = _model()
    sequences, mask = _rows()
    seen = _kernels_seen(model, lambda: policy_logprobs(model, sequences, mask, 6)[0].sum().backward())
    assert seen == ["eager"]
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        assert _kernels_seen(model, lambda: policy_logprobs(model, sequences, mask, 6)) == ["sdpa"]
    critic = _model(LlamaForSequenceClassification, num_labels=1)
    assert _kernels_seen(critic, lambda: response_values(critic, sequences, mask, 6).sum().backward()) == ["eager"]


def test_sdpa_is_restored_when_the_forward_raises():
    model = _model()
    with pytest.raises(RuntimeError, match="boom"):
        with attention_for_width(model, 8):
            assert model.config._attn_implementation == "eager"
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


def test_eager_and_sdpa_give_the_same_logprobs_and_gradients():
    """Same math, other kernel: in float32 (forced through the switch) equal to float rounding."""
    sequences, mask = _rows()
    results = []
    for kernel in ("sdpa", "eager"):
        model = _model(dtype=torch.float32)
        model.config._attn_implementation = kernel
        logprobs = policy_logprobs(model, sequences, mask, 6)[0]
        response = mask[:, 6:].float()
        (logprobs * response).sum().backward()
        grad = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
        results.append((logprobs * response, grad))
    (lp_sdpa, g_sdpa), (lp_eager, g_eager) = results
    assert torch.allclose(lp_sdpa, lp_eager, atol=1e-5)
    assert torch.allclose(g_sdpa, g_eager, atol=1e-5, rtol=1e-4)
