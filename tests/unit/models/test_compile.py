"""Which modules `trainer.compile` compiles (rlhf/models/compile.py), and the settings it refuses.

Compiling itself runs in tests/integration/test_compiled_training.py: it needs inductor and a C++ compiler."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from rlhf.config import ConfigError, load
from rlhf.models.compile import repeated_blocks

SHAPE = dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)


@pytest.mark.parametrize("cls", [LlamaForCausalLM, LlamaForSequenceClassification])
def test_the_decoder_layers_are_the_blocks(cls):
    model = cls(LlamaConfig(**SHAPE))
    assert repeated_blocks(model) == list(model.model.layers)


def test_blocks_are_found_through_a_peft_wrapper():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(LlamaForCausalLM(LlamaConfig(**SHAPE)), LoraConfig(r=2, target_modules=["q_proj"]))
    blocks = repeated_blocks(model)
    assert [type(b).__name__ for b in blocks] == ["LlamaDecoderLayer"] * 3
    assert blocks == list(model.get_base_model().model.layers)


def test_a_model_that_names_no_block_has_none():
    assert repeated_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())) == []


def _config(*overrides):
    return load(None, ["model.path=m", "data.train_path=d.jsonl", "trainer.compile=true", *overrides])


def test_compile_needs_zero_stage_2_or_less():
    with pytest.raises(ConfigError, match="^trainer.compile: needs trainer.zero_stage <= 2"):
        _config("trainer.zero_stage=3")
    assert _config("trainer.zero_stage=2").trainer.compile is True


def test_compile_refuses_quantized_models():
    with pytest.raises(ConfigError, match="^trainer.compile: cannot be used with model.quantization"):
        _config("model.quantization=nf4", "model.lora.rank=8", "algorithm.name=sft").validate()
