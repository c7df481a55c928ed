"""Parameter-efficient training through PEFT: LoRA (and QLoRA), IA3, prompt and prefix tuning.

A policy with adapters serves as its own reference: with the adapters disabled it is exactly the
base model, so PPO and DPO need no separate reference copy. Rollout engines receive merged
weights (LoRA: base + B·A, IA3: base scaled by its vectors, computed per layer, never merged in
place, so float error cannot creep into the frozen base over thousands of pushes). Prompt and
prefix tuning learn virtual tokens instead of weights: there is nothing to merge, so they serve
only modes without rollout engines (config validation says so); their forward is in
`rlhf.models.virtual_tokens`.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch

from rlhf.config import LoraConfig, ModelConfig

ALL_LINEAR = "all-linear"
OUTPUT_HEADS = {"lm_head", "score", "classifier"}
"""Heads `all-linear` leaves out (PEFT does the same); name one in the list to adapt it."""


def linear_module_names(model: torch.nn.Module) -> set[str]:
    """Leaf names of the model's linear layers, the output heads left out (what `all-linear` adapts)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not head}
    return names - OUTPUT_HEADS


def expand_target_modules(targets: list[str], model: torch.nn.Module):
    """`model.lora.target_modules` as PEFT takes it: `all-linear` alone passes through; inside a list
    (e.g. ["all-linear", "lm_head"]) it is expanded to the model's linear layer names."""
    if targets == [ALL_LINEAR]:
        return ALL_LINEAR
    if ALL_LINEAR not in targets:
        return list(targets)
    return sorted(linear_module_names(model) | {t for t in targets if t != ALL_LINEAR})


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
        target_modules=expand_target_modules(targets, model),
        task_type=task,
    )
    return get_peft_model(model, peft_config)


def peft_config_for(model_cfg: ModelConfig, task: str):
    """The PEFT config of `model.peft.type` (None when every weight trains); `task` is CAUSAL_LM or SEQ_CLS."""
    method = model_cfg.peft_method
    if method is None or method == "lora":
        return None  # LoRA keeps its own builder (apply_lora), which also handles 4-bit bases
    import peft

    settings = model_cfg.peft
    if method == "ia3":
        # Empty lists: PEFT's per-architecture defaults (None), never an empty target list.
        return peft.IA3Config(task_type=task, target_modules=list(settings.target_modules) or None,
                              feedforward_modules=list(settings.feedforward_modules) or None)
    if task != "CAUSAL_LM":
        raise ValueError(f"model.peft.type {method} is for causal LMs (the policy), not a {task} model")
    if method == "prompt_tuning":
        return peft.PromptTuningConfig(task_type=task, num_virtual_tokens=settings.num_virtual_tokens)
    if method == "prefix_tuning":
        return peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=settings.num_virtual_tokens)
    raise ValueError(f"model.peft.type: unknown method {method!r}")


def apply_peft(model: torch.nn.Module, model_cfg: ModelConfig, task: str, quantized: bool = False) -> torch.nn.Module:
    """Freeze `model` and add the trainable parameters of `model.peft.type` (the model as is when none)."""
    method = model_cfg.peft_method
    if method == "lora":
        return apply_lora(model, model_cfg.lora, task, quantized=quantized)
    config = peft_config_for(model_cfg, task)
    if config is None:
        return model
    from peft import get_peft_model

    return get_peft_model(model, config)


def is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def adapters_disabled(model: torch.nn.Module):
    """Context in which a PEFT model computes as its base model (a no-op for plain models)."""
    return model.disable_adapter() if is_peft(model) else nullcontext()


@torch.no_grad()
def _dense_weight(layer: torch.nn.Module) -> torch.Tensor:
    weight = layer.weight
    if weight.__class__.__name__ == "Params4bit":
        from bitsandbytes.functional import dequantize_4bit

        if getattr(weight.quant_state, "packing_format_for_cpu", False):
            raise RuntimeError("4-bit weights repacked for bitsandbytes' CPU kernel cannot be dequantized exactly: "
                               "load quantized models through rlhf.models.loading (keep_generic_4bit_layout)")
        return dequantize_4bit(weight.data, weight.quant_state)
    return weight


@torch.no_grad()
def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights a plain Hugging Face model with the adapters folded in would have (CPU copies).

    Keys are the base model's (no `base_layer`, no `lora_`), so a rollout engine or
    `from_pretrained` loads them as an ordinary checkpoint. Quantized bases are dequantized.
    One tensor at a time is `rlhf.models.weight_sources`, which the collective weight sync streams.
    """
    from rlhf.models.weight_sources import computed_state_dict

    return computed_state_dict(model)


@torch.no_grad()
def _lora_merged_weight(module) -> torch.Tensor:
    """W + sum of the active adapters' deltas, in the base weight's dtype (float32 for a 4-bit base)."""
    layer = module.get_base_layer()
    weight = _dense_weight(layer).float()
    for adapter in module.active_adapters:
        if adapter in module.lora_A:
            weight = weight + module.get_delta_weight(adapter).float()
    return weight.to(torch.float32 if layer.weight.dtype == torch.uint8 else layer.weight.dtype)


def _ia3_merged(name: str, module) -> dict[str, torch.Tensor]:
    """IA3 scales a layer's output features (its vector is [out, 1]) or, for feed-forward layers, its
    input features ([1, in]); either way W' = W * l broadcasts, and an output-scaled bias scales too."""
    layer = module.get_base_layer()
    weight, bias = layer.weight.float(), getattr(layer, "bias", None)
    scaled_bias = bias.detach().float().clone() if bias is not None else None
    for adapter in module.active_adapters:
        if adapter in module.ia3_l:
            scale = module.ia3_l[adapter].float()
            weight = weight * (scale.t() if module.fan_in_fan_out else scale)
            if scaled_bias is not None and not module.is_feedforward:
                scaled_bias = scaled_bias * scale.reshape(scaled_bias.shape)
    out = {f"{name}.weight": weight.to(layer.weight.dtype)}
    if scaled_bias is not None:
        out[f"{name}.bias"] = scaled_bias.to(bias.dtype)
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
