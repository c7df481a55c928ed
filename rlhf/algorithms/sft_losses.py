"""One micro-batch of supervised fine-tuning, computed on a live causal LM."""
from __future__ import annotations

import torch

from rlhf.data.batching import sft_attention_mask
from rlhf.losses.sft import sft_loss
from rlhf.models.virtual_tokens import lm_logits
from rlhf.records import SFTBatch


def sft_micro_batch_loss(model: torch.nn.Module, batch: SFTBatch) -> tuple[torch.Tensor, dict[str, float]]:
    logits = lm_logits(model, batch.input_ids, sft_attention_mask(batch.segment_ids), batch.position_ids)
    loss, _ = sft_loss(logits, batch.labels)
    return loss, {"sft/loss": float(loss.detach())}
