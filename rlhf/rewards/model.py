"""A trained reward model (sequence classifier with one output) as the reward."""
from __future__ import annotations

from functools import partial

import torch

from rlhf.models.forward import over_micro_batches, sequence_scores
from rlhf.models.loading import load_value_model
from rlhf.rewards.base import check_scores


class ModelReward:
    def __init__(self, path: str, dtype: str = "float32", trust_remote_code: bool = False, micro_batch_size: int = 32,
                 device: str = "cpu"):
        self.name = f"model:{path}"
        self.model = load_value_model(path, dtype, trust_remote_code).to(device).eval()
        self.micro_batch_size = micro_batch_size

    @torch.no_grad()
    def score(self, prompts, responses, sequences: torch.Tensor, attention_mask: torch.Tensor,
              columns=None) -> torch.Tensor:
        device = self.model.device
        scores = over_micro_batches(partial(sequence_scores, self.model), self.micro_batch_size,
                                    sequences.to(device), attention_mask.to(device)).cpu()
        return check_scores(scores, len(responses), self.name)
