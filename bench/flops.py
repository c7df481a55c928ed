"""How far a step is from this CPU's limit: the work of each phase in FLOPs, the achieved GFLOP/s, and
the share of the matmul peak measured on the machine the benchmark runs on.

Work is the usual dense-transformer count of useful FLOPs (padding and recomputation are not work):
a forward pass costs 2 FLOPs per matmul weight per token plus attention's scores and weighted sum,
4 * hidden * context per layer per token (context: the positions a token attends to); forward plus
backward is 3 forwards. Embedding lookups are not matmuls and are left out; the output head is
counted (tied or not). Which forwards a step runs follows our PPO-family step:

- generate: the policy over the prompt (prefill), then one token at a time over the response (KV cache);
- experience: the reference (and the critic with GAE, and the policy when it recomputes the engine's
  log-probs) over the whole sequence; a function reward costs no FLOPs;
- train: `ppo_epochs` forward+backward passes of the policy (and the critic) over the whole sequence.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelShape:
    matmul_params: int
    """Weights that multiply activations: every 2-D weight but the embedding tables, plus the output head."""
    layers: int
    hidden: int
    vocab: int

    def value_model(self) -> "ModelShape":
        """The critic: the same body with a one-number head in place of the vocabulary head."""
        return ModelShape(self.matmul_params - self.vocab * self.hidden + self.hidden, self.layers, self.hidden, 1)


def shape_of(model: torch.nn.Module) -> ModelShape:
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = model.get_output_embeddings().weight
    matmul = sum(p.numel() for p in model.parameters() if p.dim() >= 2 and id(p) not in embeddings)
    if id(head) in embeddings:  # tied: the table is also the head's matmul
        matmul += head.numel()
    cfg = model.config
    return ModelShape(matmul, cfg.num_hidden_layers, cfg.hidden_size, head.shape[0])


def shape_of_path(path: str) -> ModelShape:
    """The shape of a saved causal LM, built on the meta device (no weights are read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return shape_of(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)))


def forward_flops(shape: ModelShape, tokens: float, context: float) -> float:
    """One forward pass over `tokens` tokens that attend to `context` positions each on average."""
    return tokens * (2 * shape.matmul_params + 4 * shape.layers * shape.hidden * context)


def sequence_forward_flops(shape: ModelShape, length: float) -> float:
    """A causal forward over a whole sequence: token i attends to i positions, length/2 on average."""
    return forward_flops(shape, length, length / 2)


def ppo_phase_flops(policy: ModelShape, samples: int, sequence_len: float, response_len: float,
                    epochs: int, with_critic: bool, policy_recomputes: bool) -> dict[str, float]:
    """FLOPs of each phase of one PPO-family step (see the module docstring for what runs where)."""
    prompt_len = sequence_len - response_len
    generate = forward_flops(policy, prompt_len, prompt_len / 2) + forward_flops(
        policy, response_len, prompt_len + response_len / 2)
    full = sequence_forward_flops(policy, sequence_len)
    critic = sequence_forward_flops(policy.value_model(), sequence_len) if with_critic else 0.0
    experience = full + critic + (full if policy_recomputes else 0.0)
    train = epochs * 3 * (full + critic)
    return {name: samples * flops for name, flops in
            (("generate", generate), ("experience", experience), ("train", train))}


def matmul_peak_gflops(dtype: torch.dtype, size: int = 1024, seconds: float = 0.5) -> float:
    """Measured GFLOP/s of a square `F.linear` (the kernel nn.Linear runs) in `dtype` with torch's threads:
    the ceiling for the phases. On the 2-core machine plain `a @ b` in bf16 ran at ~1 GFLOP/s against
    17 for `F.linear`, so the measurement uses the models' own kernel."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        torch.nn.functional.linear(a, b)
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        torch.nn.functional.linear(a, b)
        count += 1
    return 2 * size ** 3 * count / elapsed / 1e9
