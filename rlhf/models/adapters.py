"""LoRA and QLoRA through PEFT: wrapping, the reference as the adapter-free policy, merged weights.

A policy with adapters serves as its own reference: with the adapters disabled it is exactly the
starting model, so PPO and DPO need no separate reference copy. Rollout engines receive merged
weights (base + B·A computed per layer, never merged in place, so float error cannot creep into
the frozen base over thousands of pushes).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch

from rlhf.config import LoraConfig

ALL_LINEAR = "all-linear"


def lora_enabled(lora: LoraConfig) -> bool:
    return lora.rank > 0


def quantization_config(quantization: str, dtype: torch.dtype):
    """bitsandbytes settings for `model.quantization`; None for full precision."""
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_use_double_quant=False)


def apply_lora(model: torch.nn.Module, lora: LoraConfig, task: str, quantized: bool = False) -> torch.nn.Module:
    """Freeze `model` and add trainable LoRA adapters; `task` is CAUSAL_LM or SEQ_CLS (whose head trains fully)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = lora.target_modules
    peft_config = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else list(targets),
        task_type=task,
    )
    return get_peft_model(model, peft_config)


def is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def adapters_disabled(model: torch.nn.Module):
    """Context in which a PEFT model computes as its base model (a no-op for plain models)."""
    return model.disable_adapter() if is_peft(model) else nullcontext()


def _dense_weight(layer: torch.nn.Module) -> torch.Tensor:
    weight = layer.weight
    if weight.__class__.__name__ == "Params4bit":
        from peft.utils.integrations import dequantize_module_weight

        return dequantize_module_weight(layer)
    return weight


@torch.no_grad()
def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights a plain Hugging Face model with the adapters folded in would have.

    Keys are the base model's (no `base_layer`, no `lora_`), so a rollout engine or
    `from_pretrained` loads them as an ordinary checkpoint. Quantized bases are dequantized.
    """
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    out: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            layer = module.get_base_layer()
            weight = _dense_weight(layer).float()
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    weight = weight + module.get_delta_weight(adapter).float()
            out[f"{name}.weight"] = weight.to(torch.float32 if layer.weight.dtype == torch.uint8 else layer.weight.dtype)
            if getattr(layer, "bias", None) is not None:
                out[f"{name}.bias"] = layer.bias.detach().clone()
    for key, value in base.state_dict().items():
        if "lora_" in key or ".base_layer." in key:
            continue
        if ".modules_to_save." in key:
            key = key.replace(".modules_to_save.default", "")
        elif ".original_module." in key:
            continue
        out.setdefault(key, value.detach().clone())
    return out


def _bytes(p: torch.nn.Parameter) -> int:
    # ZeRO-3 leaves a 0-element placeholder on each rank; ds_numel is the whole parameter.
    return getattr(p, "ds_numel", p.numel()) * p.element_size()


def adapter_parameter_bytes(model: torch.nn.Module) -> int:
    return sum(_bytes(p) for p in model.parameters() if p.requires_grad)


def frozen_parameter_bytes(model: torch.nn.Module) -> int:
    """Memory of the frozen weights: what a separate reference copy would cost again."""
    return sum(_bytes(p) for p in model.parameters() if not p.requires_grad)




def save_adapter(model: torch.nn.Module, folder: str, state: Optional[dict] = None) -> None:
    """The adapters in PEFT format (`PeftModel.from_pretrained(base, folder)` loads them)."""
    model.save_pretrained(folder, state_dict=state) if state is not None else model.save_pretrained(folder)
