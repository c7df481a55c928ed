"""The tensors a rollout engine loads, described before they are computed.

Each `WeightSource` names one tensor of the plain Hugging Face state dict (adapters merged, quantized
bases dequantized), the parameters it is computed from (what ZeRO-3 must gather) and how to compute it.
The collective weight sync gathers and computes one bucket of sources at a time, so only one bucket
of full tensors exists at once; `merged_state_dict` is every source computed together.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class WeightSource:
    name: str
    """The key a plain model's state dict has for it."""
    shape: tuple[int, ...]
    dtype: torch.dtype
    params: list[torch.nn.Parameter]
    """What must be whole (gathered under ZeRO-3) while `compute` runs."""
    compute: Callable[[], torch.Tensor]


def _full_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    # ZeRO-3 leaves an empty placeholder on each rank; ds_shape is the whole parameter's.
    return tuple(getattr(tensor, "ds_shape", tensor.shape))


def _plain(name: str, tensor: torch.Tensor) -> WeightSource:
    params = [tensor] if isinstance(tensor, torch.nn.Parameter) else []
    return WeightSource(name, _full_shape(tensor), tensor.dtype, params, lambda: tensor.detach())


def plain_sources(module: torch.nn.Module, skip: Callable[[str], bool] = lambda key: False) -> list[WeightSource]:
    """One source per distinct tensor of `module.state_dict()`: tied weights are sent under their first name."""
    seen: set[int] = set()
    out = []
    for key, tensor in module.state_dict(keep_vars=True).items():
        if skip(key) or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        out.append(_plain(key, tensor))
    return out


def weight_sources(model: torch.nn.Module) -> list[WeightSource]:
    """What an engine needs from `model` (plain or PEFT), in a fixed order every rank agrees on."""
    from rlhf.models.adapters import is_peft

    return _peft_sources(model) if is_peft(model) else plain_sources(model)


def _peft_sources(model: torch.nn.Module) -> list[WeightSource]:
    from peft.tuners.ia3 import IA3Layer
    from peft.tuners.lora import LoraLayer

    from rlhf.models.adapters import _ia3_merged, _lora_merged_weight

    if getattr(model, "active_peft_config", None) is not None and model.active_peft_config.is_prompt_learning:
        raise ValueError(f"{model.active_peft_config.peft_type}: virtual tokens do not merge into weights; "
                         "a rollout engine cannot receive this policy")
    base = model.get_base_model()
    out: list[WeightSource] = []
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            layer = module.get_base_layer()
            packed = layer.weight.dtype == torch.uint8  # 4-bit: dequantized to float32
            shape = (layer.out_features, layer.in_features) if packed else _full_shape(layer.weight)
            dtype = torch.float32 if packed else layer.weight.dtype
            out.append(WeightSource(f"{name}.weight", shape, dtype, list(module.parameters()),
                                    lambda module=module: _lora_merged_weight(module)))
            if getattr(layer, "bias", None) is not None:
                out.append(_plain(f"{name}.bias", layer.bias))
        elif isinstance(module, IA3Layer):
            layer = module.get_base_layer()
            keys = ["weight"] + (["bias"] if getattr(layer, "bias", None) is not None else [])
            for key in keys:
                tensor = getattr(layer, key)
                out.append(WeightSource(f"{name}.{key}", _full_shape(tensor), tensor.dtype, list(module.parameters()),
                                        lambda name=name, module=module, key=key:
                                        _ia3_merged(name, module)[f"{name}.{key}"]))
    taken = {s.name for s in out}

    def skip(key: str) -> bool:
        return ("lora_" in key or "ia3_l" in key or ".base_layer." in key or ".original_module." in key
                or key.replace(".modules_to_save.default", "") in taken)

    for source in plain_sources(base, skip):
        source.name = source.name.replace(".modules_to_save.default", "")
        out.append(source)
    return out


def manifest(sources: list[WeightSource]):
    """The sources as the weight-sync group's `TensorSpec`s (name, full shape, dtype name), in order."""
    from rlhf.rollout.sync_group import TensorSpec

    return [TensorSpec(s.name, tuple(s.shape), str(s.dtype).removeprefix("torch.")) for s in sources]


@torch.no_grad()
def computed_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every source computed (parameters already whole): a plain state dict, copies on the CPU."""
    return {s.name: s.compute().detach().clone().cpu() for s in weight_sources(model)}
