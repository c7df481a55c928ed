"""Batched forward passes over [left-padded prompt | right-padded response] rows.

Every forward passes position ids derived from the attention mask, so a left-padded
row scores exactly like the same row unpadded; the rollout engines, the trainers and
the frozen models must agree on this to the last digit for PPO's ratios to mean anything.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from rlhf.logprobs import position_ids_from_attention_mask, response_logprobs
from rlhf.losses import entropy_from_logits
from rlhf.models.attention import attention_for_width
from rlhf.models.virtual_tokens import lm_logits

if TYPE_CHECKING:  # annotations only: the driver imports this module through the actors' and needs no modeling code
    from transformers import PreTrainedModel


def causal_lm_logits(model: PreTrainedModel, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, V] logits with padding-aware position ids (prompt/prefix tuning's virtual tokens excluded)."""
    with attention_for_width(model, sequences.shape[1]):
        return lm_logits(model, sequences, attention_mask, position_ids_from_attention_mask(attention_mask))


def policy_logprobs(
    model: PreTrainedModel,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    with_entropy: bool = False,
    entropy_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Response log-probs [B, R] (and per-token entropy [B, R] when asked).

    `entropy_grad=False` computes the entropy for logging only: without it autograd would keep a
    full-vocabulary float32 tensor [B, R, V] per micro-batch for a term whose coefficient is 0.
    """
    logits = causal_lm_logits(model, sequences, attention_mask)
    logprobs = response_logprobs(logits, sequences, prompt_len)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits[:, prompt_len - 1 : -1])
    return logprobs, entropy


def response_vocab_logprobs(model: PreTrainedModel, sequences: torch.Tensor, attention_mask: torch.Tensor,
                            prompt_len: int) -> torch.Tensor:
    """Log-probs over the whole vocabulary at each response token's position, [B, R, V] float32:
    what a distillation teacher hands the student (position P-1+r predicts response token r)."""
    logits = causal_lm_logits(model, sequences, attention_mask)[:, prompt_len - 1: -1]
    return torch.log_softmax(logits.float(), dim=-1)


def token_values(model: PreTrainedModel, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The scalar head of a sequence classifier read at every position: [B, T].

    Transformers' classifier forward pools at the last token; a critic needs a value per
    token, so the backbone and the `score` head are called separately.
    """
    if hasattr(model, "get_base_model"):  # PEFT: the wrapped classifier, its layers carrying the adapters
        model = model.get_base_model()
    backbone = getattr(model, model.base_model_prefix)
    with attention_for_width(model, sequences.shape[1]):
        hidden = backbone(
            input_ids=sequences,
            attention_mask=attention_mask,
            position_ids=position_ids_from_attention_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state
    return model.score(hidden).squeeze(-1).float()


def response_values(
    model: PreTrainedModel, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int
) -> torch.Tensor:
    """V(s_t) for each response token, [B, R]: the value of the state just before it is emitted."""
    return token_values(model, sequences, attention_mask)[:, prompt_len - 1 : -1]


def sequence_scores(model: PreTrainedModel, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """A reward model's score per row [B], read at the last real token (whatever the padding side)."""
    values = token_values(model, sequences, attention_mask)
    positions = torch.arange(sequences.shape[1], device=sequences.device)
    last = (positions * attention_mask).argmax(dim=-1)
    return values.gather(1, last.unsqueeze(1)).squeeze(1)


def in_micro_batches(n_rows: int, micro_batch_size: int):
    """Slices covering 0..n_rows in chunks of micro_batch_size."""
    for start in range(0, n_rows, micro_batch_size):
        yield slice(start, min(start + micro_batch_size, n_rows))


def over_micro_batches(fn, micro_batch_size: int, sequences: torch.Tensor, attention_mask: torch.Tensor,
                       *args) -> torch.Tensor:
    """fn(sequences[s], attention_mask[s], *args) for each micro-batch s, concatenated (float32)."""
    parts = [fn(sequences[s], attention_mask[s], *args) for s in in_micro_batches(len(sequences), micro_batch_size)]
    return torch.cat(parts).float()
