"""Token log-probabilities from causal-LM logits, and position ids for left padding.

log π(y_t | y_<t) = logits[y_t] - logsumexp(logits), the standard
autoregressive factorisation (e.g. Ouyang et al. 2022 score responses this way).

Departures from a textbook log_softmax + gather:
- Only the gathered logit and the logsumexp are computed, so no [B, T, V]
  log-softmax tensor is materialised.
- Low-precision logits (bf16/fp16) are upcast to float32 one batch row at a
  time, bounding the extra memory to one [T, V] float32 slab.
"""

from __future__ import annotations

import torch

__all__ = ["logprobs_from_logits", "response_logprobs", "position_ids_from_attention_mask"]


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-softmax of ``logits`` evaluated at ``tokens``.

    Args:
        logits: [B, T, V], any float dtype.
        tokens: [B, T] integer token ids.

    Returns:
        [B, T] float32 (float64 if the logits are float64) log-probabilities.
    """
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and tokens [B, T], got {tuple(logits.shape)} "
            f"and {tuple(tokens.shape)}"
        )
    index = tokens.long().unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        picked = torch.gather(logits, -1, index).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    rows = []
    for row_logits, row_index in zip(logits, index):
        row = row_logits.float()
        rows.append(torch.gather(row, -1, row_index).squeeze(-1) - torch.logsumexp(row, dim=-1))
    return torch.stack(rows) if rows else logits.new_zeros(tokens.shape, dtype=torch.float32)


def response_logprobs(
    logits: torch.Tensor, sequences: torch.Tensor, prompt_len: int
) -> torch.Tensor:
    """Log-probs of the response tokens of [left-padded prompt | right-padded response] rows.

    Position t's logits predict token t + 1, so the response tokens
    ``sequences[:, prompt_len:]`` are scored by ``logits[:, prompt_len-1 : -1]``.

    The logits must come from a forward pass given the attention mask and
    ``position_ids_from_attention_mask(attention_mask)``; with default
    position ids the left padding shifts every real token's position and the
    log-probs differ from those of the unpadded sequence.

    Args:
        logits: [B, P + R, V] from the causal LM over the full sequences.
        sequences: [B, P + R] token ids, prompt left-padded to width P.
        prompt_len: P >= 1.

    Returns:
        [B, R] float32 log-probs; values at response padding are meaningless
        and must be masked by the caller.
    """
    if sequences.dim() != 2 or logits.shape[:2] != sequences.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match sequences {tuple(sequences.shape)}"
        )
    if not 1 <= prompt_len <= sequences.shape[1]:
        raise ValueError(f"prompt_len must be in [1, {sequences.shape[1]}], got {prompt_len}")
    return logprobs_from_logits(logits[:, prompt_len - 1 : -1], sequences[:, prompt_len:])


def position_ids_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token.

    Args:
        attention_mask: [B, T], 1 on real tokens, 0 on padding.

    Returns:
        [B, T] long: cumsum - 1, clamped at 0 (left padding gets position 0,
        which the attention mask hides anyway).
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)
