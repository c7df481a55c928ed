"""One micro-batch of supervised fine-tuning, computed on a live causal LM."""
from __future__ import annotations

from contextlib import AbstractContextManager as ContextManager
from typing import Callable

import torch

from rlhf.data.batching import sft_attention_mask
from rlhf.losses.sft import reference_kl_loss, sft_loss
from rlhf.models.virtual_tokens import lm_logits
from rlhf.records import SFTBatch


def sft_micro_batch_loss(model: torch.nn.Module, batch: SFTBatch) -> tuple[torch.Tensor, dict[str, float]]:
    logits = lm_logits(model, batch.input_ids, sft_attention_mask(batch.segment_ids), batch.position_ids)
    loss, _ = sft_loss(logits, batch.labels)
    return loss, {"sft/loss": float(loss.detach())}


def reference_kl_micro_batch_loss(model: torch.nn.Module, reference: Callable[[], ContextManager[torch.nn.Module]],
                                  batch: SFTBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """Token mean of KL(reference || model) over the next-token distributions at the labelled positions:
    the pre-training mix anchored to the reference model instead of fitted to its rows' tokens
    (`algorithm.ptx_target: reference`). `reference()` is a context giving the frozen model."""
    mask = sft_attention_mask(batch.segment_ids)
    logits = lm_logits(model, batch.input_ids, mask, batch.position_ids)
    with torch.no_grad(), reference() as frozen:
        reference_logits = lm_logits(frozen, batch.input_ids, mask, batch.position_ids)
    loss = reference_kl_loss(logits, reference_logits, batch.labels)
    return loss, {"ptx/reference_kl": float(loss.detach())}
