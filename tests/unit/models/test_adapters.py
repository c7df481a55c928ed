"""LoRA/QLoRA helpers on the real tiny policy: merged weights, the adapter-free reference, saving."""
from __future__ import annotations

import pytest
from dependencies import require
import torch
from peft import PeftModel

from rlhf.config import LoraConfig
from rlhf.models.adapters import adapters_disabled, apply_lora, frozen_parameter_bytes, merged_state_dict
from rlhf.models.loading import load_causal_lm
from rlhf.training.deepspeed_model import save_plain_model

TOKENS = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46], [1, 50, 51, 52, 53, 54, 55, 56]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=TOKENS).logits


def _trained_lora(path: str, quantization: str = "none", targets=("all-linear",)):
    torch.manual_seed(0)
    model = apply_lora(load_causal_lm(path, quantization=quantization), LoraConfig(rank=4, target_modules=list(targets)),
                       "CAUSAL_LM", quantized=quantization != "none")
    with torch.no_grad():  # stand-in for training: B starts at zero, so give it values
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    return model


def test_merged_weights_reproduce_the_adapted_model_without_touching_the_base(tiny_assets):
    path = str(tiny_assets.policy)
    model = _trained_lora(path)
    base_before = {k: v.clone() for k, v in model.get_base_model().state_dict().items() if "base_layer" in k}
    merged = merged_state_dict(model)
    plain = load_causal_lm(path)
    assert set(merged) == set(plain.state_dict())
    plain.load_state_dict(merged)
    assert torch.allclose(_logits(plain), _logits(model), atol=1e-5)
    # Computed beside the base, never merged into it: repeated pushes cannot drift the frozen weights.
    after = model.get_base_model().state_dict()
    assert all(torch.equal(v, after[k]) for k, v in base_before.items())


def test_disabled_adapters_are_the_starting_policy(tiny_assets):
    path = str(tiny_assets.policy)
    model = _trained_lora(path)
    start = _logits(load_causal_lm(path))
    assert not torch.allclose(_logits(model), start, atol=1e-3)
    with adapters_disabled(model):
        assert torch.equal(_logits(model), start)
    assert frozen_parameter_bytes(model) == sum(p.numel() * 4 for p in load_causal_lm(path).parameters())


def test_saved_adapter_and_merged_model_load_back_with_the_same_outputs(tiny_assets, tmp_path):
    path = str(tiny_assets.policy)
    model = _trained_lora(path)
    model.save_pretrained(tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(load_causal_lm(path), tmp_path / "adapter")
    assert torch.allclose(_logits(loaded), _logits(model), atol=1e-6)
    save_plain_model(model.get_base_model().config, merged_state_dict(model), str(tmp_path / "merged"))
    assert torch.allclose(_logits(load_causal_lm(str(tmp_path / "merged"))), _logits(model), atol=1e-5)


def test_qlora_merges_dequantized_weights_and_saves_a_plain_model(tiny_assets, tmp_path):
    require("bitsandbytes")
    path = str(tiny_assets.policy)
    model = _trained_lora(path, quantization="nf4")
    _logits(model)  # an eval forward without gradients: where bitsandbytes would repack 4-bit weights
    merged = merged_state_dict(model)
    assert all(v.dtype == torch.float32 for v in merged.values())
    save_plain_model(model.get_base_model().config, merged, str(tmp_path / "merged"))
    plain = load_causal_lm(str(tmp_path / "merged"))  # no quantization_config left in config.json
    # bitsandbytes' generic CPU path dequantizes to float32 and multiplies densely, so the plain copy computes
    # what the 4-bit model does (measured: 5e-7; its AVX512-BF16 kernel, now kept off, was 2e-3 off).
    assert torch.allclose(_logits(plain), _logits(model), atol=1e-5)


def _dense_reference(model) -> dict[str, torch.Tensor]:
    """W = dequantize(4-bit base) + scaling * B @ A per adapted layer, in float32, computed apart from the code
    under test (bitsandbytes' own dequantization, before any forward)."""
    from bitsandbytes.functional import dequantize_4bit

    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "get_base_layer"):
            layer = module.get_base_layer()
            weight = dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
            delta = module.lora_B["default"].weight.float() @ module.lora_A["default"].weight.float()
            out[name.removeprefix("base_model.model.") + ".weight"] = weight + delta * module.scaling["default"]
    return out


def test_qlora_merged_weights_equal_a_dense_float32_reference_and_a_stale_push_shows(tiny_assets):
    require("bitsandbytes")
    model = _trained_lora(str(tiny_assets.policy), quantization="nf4")
    reference = _dense_reference(model)
    assert len(reference) == 14  # 7 linear layers x 2 blocks
    # An eval forward without gradients, then a state_dict(): on CPUs with AVX512-BF16 bitsandbytes would repack
    # the weights for its bf16 kernel on the first, and its in-place inverse on the second left the block scales
    # transposed (merged weights 30% off, and the model's own forwards changed); loading keeps the generic layout.
    logits = _logits(model)
    model.state_dict()
    assert torch.equal(_logits(model), logits)
    merged = merged_state_dict(model)
    for key, weight in reference.items():
        assert torch.allclose(merged[key], weight, rtol=0, atol=1e-6), key
    # One small training step later (B moves by 1e-3), the weights pushed before are stale: the same check
    # tells them from the current ones, where the logits gap of a 4-bit kernel could not.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 1e-3)
    current = merged_state_dict(model)
    stale_gap = max(float((merged[k] - current[k]).abs().max()) for k in reference)
    assert stale_gap > 1e-4, stale_gap
    assert not any(torch.allclose(current[k], w, atol=1e-6) for k, w in reference.items())
