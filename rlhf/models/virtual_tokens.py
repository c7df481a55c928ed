"""Causal-LM forward for prompt and prefix tuning with our padding, positions and packing.

PEFT's own forward for these methods drops our position ids (prompt tuning: "Position ids are
not supported ... Ignoring"), so a left-padded row would score differently from the same row
unpadded; it returns V extra logit positions (prompt tuning), and it cannot extend the block-
diagonal 4-D mask of packed SFT rows. Here the V virtual tokens are laid out explicitly:

- prompt tuning: [V virtual embeddings | the row]; virtual tokens sit at positions 0..V-1 and
  every real token at V + its own position (what PEFT gives an unpadded row), the logits of
  the virtual positions are dropped, so logits[:, t] still predicts sequences[:, t + 1];
- prefix tuning: V learned keys/values per layer in the cache, real tokens at V + position
  (PEFT's own offset), every real query may attend to all V prefix keys.

Padding and packing stay exact: each packed example sees the same virtual tokens, as it
would alone. With the adapters disabled (PEFT's `disable_adapter`), the plain model runs.
"""
from __future__ import annotations

import torch

VIRTUAL_TOKEN_PEFT_TYPES = ("PROMPT_TUNING", "PREFIX_TUNING")


def virtual_token_method(model: torch.nn.Module) -> str | None:
    """`PROMPT_TUNING` / `PREFIX_TUNING` when `model` is a PEFT model of that kind with its adapter on, else None."""
    config_of = getattr(model, "active_peft_config", None)
    if config_of is None or getattr(model, "_adapters_disabled", False):
        return None
    kind = str(getattr(config_of.peft_type, "value", config_of.peft_type))
    return kind if kind in VIRTUAL_TOKEN_PEFT_TYPES else None


def extend_attention_mask(attention_mask: torch.Tensor, num_virtual: int, virtual_queries: bool) -> torch.Tensor:
    """The mask with V virtual key positions in front (and V virtual query rows when `virtual_queries`).

    2-D [B, T] padding masks get V ones in front ([B, V + T]). 4-D boolean [B, 1, T, T] masks (packed
    rows) become [B, 1, T, V + T] (prefix tuning: only keys are added) or [B, 1, V + T, V + T] (prompt
    tuning: the virtual tokens are also queries, attending causally among themselves and to nothing
    after them); every real query attends to every virtual key.
    """
    if attention_mask.dim() == 2:
        ones = attention_mask.new_ones(attention_mask.shape[0], num_virtual)
        return torch.cat([ones, attention_mask], dim=1)
    if attention_mask.dim() != 4:
        raise ValueError(f"attention mask must be [B, T] or [B, 1, T, T], got {tuple(attention_mask.shape)}")
    b, heads, t, _ = attention_mask.shape
    mask = attention_mask.bool()
    to_virtual = mask.new_ones(b, heads, t, num_virtual)
    rows = torch.cat([to_virtual, mask], dim=-1)
    if not virtual_queries:
        return rows
    causal = torch.tril(mask.new_ones(num_virtual, num_virtual)).expand(b, heads, num_virtual, num_virtual)
    virtual_rows = torch.cat([causal, mask.new_zeros(b, heads, num_virtual, t)], dim=-1)
    return torch.cat([virtual_rows, rows], dim=-2)


def virtual_token_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         position_ids: torch.Tensor) -> torch.Tensor:
    """[B, T, V] logits of a prompt- or prefix-tuned PEFT causal LM, aligned with `input_ids`."""
    method = virtual_token_method(model)
    if method is None:
        raise ValueError("virtual_token_logits needs a PEFT prompt- or prefix-tuning model with its adapter on")
    num_virtual = model.active_peft_config.num_virtual_tokens
    batch = input_ids.shape[0]
    base = model.get_base_model()
    if method == "PREFIX_TUNING":
        cache = model.get_prompt(batch, max_cache_len=input_ids.shape[1] + num_virtual)
        return base(input_ids=input_ids, attention_mask=extend_attention_mask(attention_mask, num_virtual, False),
                    position_ids=position_ids + num_virtual, past_key_values=cache, use_cache=False).logits
    embeds = base.get_input_embeddings()(input_ids)
    prompts = model.get_prompt(batch).to(embeds.dtype)
    virtual_positions = torch.arange(num_virtual, device=position_ids.device).expand(batch, num_virtual)
    logits = base(inputs_embeds=torch.cat([prompts, embeds], dim=1),
                  attention_mask=extend_attention_mask(attention_mask, num_virtual, True),
                  position_ids=torch.cat([virtual_positions, position_ids + num_virtual], dim=1),
                  use_cache=False).logits
    return logits[:, num_virtual:]


def lm_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              position_ids: torch.Tensor) -> torch.Tensor:
    """[B, T, V] logits of any causal LM we train (plain, LoRA, IA3, prompt or prefix tuning)."""
    if virtual_token_method(model) is not None:
        return virtual_token_logits(model, input_ids, attention_mask, position_ids)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                 use_cache=False).logits
