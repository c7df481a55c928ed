"""Load policy, reference, reward and value models from Hugging Face folders."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the driver imports this module; only actors load models (transformers' modeling: seconds)
    from transformers import PreTrainedModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_folder(path: str, role: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{role} model folder {path!r} does not exist (build tiny ones with `rlhf assets`)")


GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""`tokenizer_class` values naming transformers' generic `tokenizer.json` class rather than a model's own."""

PLAIN_MODEL_TYPES = frozenset({"llama", "mistral", "qwen3", "gemma", "gemma2", "gpt2", "gpt_neox"})
"""Model types for which `AutoTokenizer` loads a generic `tokenizer_class` as the generic class itself
(tests/unit/models/test_loading.py checks each against `AutoTokenizer`)."""


def _read_json_object(path: str, name: str) -> dict:
    """The folder's JSON file `name` as saved ({} when it is missing, does not parse, or is not an object)."""
    try:
        with open(os.path.join(path, name), encoding="utf-8") as fh:
            content = json.load(fh)
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def read_model_config(path: str) -> dict:
    """The folder's `config.json` as saved ({} when it has none or it does not parse)."""
    return _read_json_object(path, "config.json")


def _plain_tokenizer(path: str) -> bool:
    """Whether `AutoTokenizer` would load this folder with the generic class, decided from its JSON files."""
    tokenizer_config = _read_json_object(path, "tokenizer_config.json")
    config = read_model_config(path)
    return (tokenizer_config.get("tokenizer_class") in GENERIC_TOKENIZER_CLASSES
            and "auto_map" not in tokenizer_config and "auto_map" not in config
            and config.get("model_type") in PLAIN_MODEL_TYPES and os.path.isfile(os.path.join(path, "tokenizer.json")))


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """The folder's tokenizer, the one `AutoTokenizer` gives.

    `AutoTokenizer` first builds the model's config class, and transformers' config modules import its
    kernel and compiler integrations (torch._dynamo): about 4 s of CPU in a fresh process. The driver,
    which reads the data before any actor starts, needs none of that, so a folder that `AutoTokenizer`
    would load with the generic class is loaded by that class directly."""
    _check_folder(path, "tokenizer")
    if _plain_tokenizer(path):
        from transformers.tokenization_utils_tokenizers import TokenizersBackend

        return TokenizersBackend.from_pretrained(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def _quantization_kwargs(quantization: str, dtype: str) -> dict:
    if quantization == "none":
        return {}
    from rlhf.models.adapters import quantization_config

    return {"quantization_config": quantization_config(quantization, DTYPES[dtype])}


def keep_generic_4bit_layout(model: torch.nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its AVX512-BF16 CPU kernel.

    On such CPUs, Linear4bit repacks its weights in place on the first eval-mode forward without
    gradients (another nibble order, block scales transposed and cast to bfloat16). Afterwards generic
    dequantization reads garbage, and bitsandbytes 0.50's own inverse, which every `state_dict()` call
    runs in place, leaves non-double-quantized scales transposed: the next forward computes with
    corrupted weights (merged weights off by 30% of their size, seen on an AMD EPYC). The generic layout
    behaves the same on every CPU; the bf16 kernel is only a speed-up for 4-bit inference on CPU.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def context_limit(path: str, trust_remote_code: bool = False) -> int | None:
    """The model's maximum sequence length (`max_position_embeddings`), None if its config has none.

    Read from `config.json` where it is saved under that name (no config class, see `load_tokenizer`);
    otherwise (another name such as GPT-2's `n_positions`, remote code) through `AutoConfig`."""
    _check_folder(path, "model")
    raw = read_model_config(path)
    if isinstance(raw.get("max_position_embeddings"), int) and "auto_map" not in raw:
        return raw["max_position_embeddings"]
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return getattr(config, "max_position_embeddings", None)


def load_causal_lm(path: str, dtype: str = "float32", trust_remote_code: bool = False,
                   quantization: str = "none") -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    _check_folder(path, "causal LM")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                                                 **_quantization_kwargs(quantization, dtype))
    if quantization != "none":
        keep_generic_4bit_layout(model)
    return model


def load_reference_model(model_cfg, device: torch.device) -> PreTrainedModel:
    """The frozen reference (`model.reference_path`, else the policy's start `model.path`) on `device`, for
    forwards only; full precision even when the policy is quantized. Its own group and the policy's copy
    (`ray.reference_in_policy`) both load it here."""
    model = load_causal_lm(model_cfg.reference_path or model_cfg.path, model_cfg.dtype, model_cfg.trust_remote_code)
    return model.to(device).eval().requires_grad_(False)


def load_value_model(path: str, dtype: str = "float32", trust_remote_code: bool = False,
                     quantization: str = "none") -> PreTrainedModel:
    """A sequence classifier with one output: a reward model, or a critic read at every token.

    From a causal-LM folder the scalar head starts fresh (transformers warns about it), which
    is how a critic is usually initialised from the policy.
    """
    from transformers import AutoModelForSequenceClassification

    _check_folder(path, "value")
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
        **_quantization_kwargs(quantization, dtype),
    )
    if quantization != "none":
        keep_generic_4bit_layout(model)
    if model.config.pad_token_id is None:
        tok = load_tokenizer(path, trust_remote_code)
        model.config.pad_token_id = tok.pad_token_id
    return model
