"""The pre-training mix (InstructGPT's "PPO-ptx", Ouyang et al. 2022 §3.5): language-modelling rows from
`data.ptx_path` whose next-token loss, times `algorithm.ptx_coef`, is added to every policy micro-batch
loss, in every mode that trains the policy. Tuning on a narrow task makes a model forget; rehearsing a
sample of what it was pre-trained on holds its general ability where the forgetting gate measures it.

Which rows a micro-batch gets is a pure function of the optimizer step, the micro-batch's place in the
global mini-batch and `trainer.seed`: rows walk a reshuffled permutation per epoch of the file, so a
resumed run draws what the uninterrupted one would have, and one replica draws what two draw together.
"""
from __future__ import annotations

import random
from functools import lru_cache

from rlhf.data.examples import SFTExample, document_ids
from rlhf.data.reader import read_text_lines
from rlhf.losses.sft import IGNORE_INDEX


def read_ptx_lines(path: str) -> list[tuple[int, str]]:
    """(line number, text) of each non-empty line (one document each)."""
    return read_text_lines(path, "data.ptx_path")


def ptx_examples(tokenizer, lines: list[tuple[int, str]], max_tokens: int) -> list[SFTExample]:
    """One row per line, as the model was pre-trained (rlhf.data.examples.document_ids), cut to `max_tokens`;
    every token after the first is trained on."""
    examples = []
    for number, line in lines:
        ids = document_ids(tokenizer, line)[:max_tokens]
        examples.append(SFTExample(number, ids, [IGNORE_INDEX] + ids[1:]))
    return examples


@lru_cache(maxsize=4)
def _epoch_order(size: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(size))
    random.Random(f"ptx-{seed}-{epoch}").shuffle(order)
    return tuple(order)


def ptx_indices(size: int, seed: int, step: int, micro_index: int, micros_per_step: int,
                rows_per_micro: int) -> list[int]:
    """Rows of a `size`-row file for micro-batch `micro_index` (of `micros_per_step`, counted over all
    replicas) of optimizer step `step`: the next `rows_per_micro` places of the epoch-wise shuffled walk."""
    start = (step * micros_per_step + micro_index) * rows_per_micro
    out = []
    for place in range(start, start + rows_per_micro):
        epoch, offset = divmod(place, size)
        out.append(_epoch_order(size, seed, epoch)[offset])
    return out
