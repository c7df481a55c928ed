"""One micro-batch of distillation, computed on a live causal LM (the student).

The distill mode trains on two records: `DistillBatch` (on-policy: the student's samples with the
teacher's distribution at every response position; the loss is the configured divergence) and
`SFTBatch` (offline: the teacher's answers as demonstrations; the loss is SFT's own, shared). The
student's held-out divergence is measured on a `DistillBatch` in both modes.
"""
from __future__ import annotations

import torch

from rlhf.algorithms.sft_losses import sft_micro_batch_loss
from rlhf.losses.distill import distill_loss
from rlhf.models.forward import causal_lm_logits
from rlhf.records import DistillBatch, SFTBatch


def distill_micro_batch_loss(model: torch.nn.Module, batch: DistillBatch, divergence: str, jsd_beta: float,
                             temperature: float) -> tuple[torch.Tensor, dict[str, float]]:
    logits = causal_lm_logits(model, batch.sequences, batch.attention_mask)[:, batch.prompt_len - 1: -1]
    loss, stats = distill_loss(logits, batch.teacher_logprobs, batch.response_mask, divergence, jsd_beta, temperature)
    if stats.tokens == 0:  # padding only: no metric, so it cannot dilute the means
        return loss, {}
    return loss, {"distill/divergence": float(loss.detach()), "distill/forward_kl": stats.forward_kl,
                  "distill/reverse_kl": stats.reverse_kl}


def distill_or_sft_micro_batch_loss(model: torch.nn.Module, batch, divergence: str, jsd_beta: float,
                                    temperature: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The distill mode's objective: the divergence on a DistillBatch, SFT on an SFTBatch."""
    if isinstance(batch, DistillBatch):
        return distill_micro_batch_loss(model, batch, divergence, jsd_beta, temperature)
    if isinstance(batch, SFTBatch):
        return sft_micro_batch_loss(model, batch)
    raise TypeError(f"the distill objective takes DistillBatch or SFTBatch, got {type(batch).__name__}")
