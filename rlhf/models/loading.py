"""Load policy, reference, reward and value models from Hugging Face folders."""
from __future__ import annotations

import os

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_folder(path: str, role: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{role} model folder {path!r} does not exist (build tiny ones with `rlhf assets`)")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    _check_folder(path, "tokenizer")
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def _quantization_kwargs(quantization: str, dtype: str) -> dict:
    if quantization == "none":
        return {}
    from rlhf.models.adapters import quantization_config

    return {"quantization_config": quantization_config(quantization, DTYPES[dtype])}


def context_limit(path: str, trust_remote_code: bool = False) -> int | None:
    """The model's maximum sequence length (`max_position_embeddings`), None if its config has none."""
    from transformers import AutoConfig

    _check_folder(path, "model")
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return getattr(config, "max_position_embeddings", None)


def load_causal_lm(path: str, dtype: str = "float32", trust_remote_code: bool = False,
                   quantization: str = "none") -> PreTrainedModel:
    _check_folder(path, "causal LM")
    return AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                                                **_quantization_kwargs(quantization, dtype))


def load_value_model(path: str, dtype: str = "float32", trust_remote_code: bool = False,
                     quantization: str = "none") -> PreTrainedModel:
    """A sequence classifier with one output: a reward model, or a critic read at every token.

    From a causal-LM folder the scalar head starts fresh (transformers warns about it), which
    is how a critic is usually initialised from the policy.
    """
    _check_folder(path, "value")
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
        **_quantization_kwargs(quantization, dtype),
    )
    if model.config.pad_token_id is None:
        tok = load_tokenizer(path, trust_remote_code)
        model.config.pad_token_id = tok.pad_token_id
    return model
