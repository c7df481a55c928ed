"""Tiny randomly initialised Llama models: a causal LM (policy and reference) and a
one-label sequence classifier (reward model and critic).

Both share one architecture spec, so the critic can start from the reward model
and the reference from the policy. Weights are float32: on CPU that is what the
trainer computes in, and it lets vLLM's logprobs match HF's exactly.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedModel

from rlhf.assets.spec import MODEL_SIZES, VLLM_CPU_HEAD_DIMS, TinyModelSpec  # noqa: F401  (re-exported)


def llama_config(spec: TinyModelSpec, vocab_size: int, pad_token_id: int, bos_token_id: int, eos_token_id: int,
                 **extra) -> LlamaConfig:
    """A ``LlamaConfig`` for ``spec`` with the tokenizer's special ids baked in."""
    spec.validate()
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.ffn_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        tie_word_embeddings=spec.tie_word_embeddings,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        dtype="float32",
        **extra,
    )


def _seeded_init(cls: type[PreTrainedModel], config: LlamaConfig, seed: int) -> PreTrainedModel:
    # Fork the RNG so building assets never disturbs the caller's random state,
    # and seed inside so the weights depend on nothing but (config, seed).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    return model.to(torch.float32).eval()


def build_policy(spec: TinyModelSpec, vocab_size: int, pad_token_id: int, bos_token_id: int,
                 eos_token_id: int, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised tiny ``LlamaForCausalLM`` whose generation stops at eos."""
    config = llama_config(spec, vocab_size, pad_token_id, bos_token_id, eos_token_id)
    model = _seeded_init(LlamaForCausalLM, config, seed)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = bos_token_id, eos_token_id, pad_token_id
    return model


def build_reward(spec: TinyModelSpec, vocab_size: int, pad_token_id: int, bos_token_id: int,
                 eos_token_id: int, seed: int = 0) -> LlamaForSequenceClassification:
    """A randomly initialised tiny ``LlamaForSequenceClassification`` with one output.

    ``pad_token_id`` is what lets HF pick each row's last real token for the score,
    with either padding side (it takes the rightmost non-pad token).
    """
    config = llama_config(spec, vocab_size, pad_token_id, bos_token_id, eos_token_id, num_labels=1)
    return _seeded_init(LlamaForSequenceClassification, config, seed)


def count_params(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied tensors counted once)."""
    return sum(p.numel() for p in model.parameters())
