"""`trainer.compile` on real inductor: compiled blocks compute what eager ones do, new shapes do not
recompile, and a GRPO run with compiled trainers scores its first step as an eager run does."""
from __future__ import annotations

import os

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlhf.config import load
from rlhf.metrics import read_metrics
from rlhf.models.compile import compile_blocks
from rlhf.models.forward import policy_logprobs
from rlhf.train import run_training

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
SHAPE = dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)


def _logprobs_and_grads(model, sequences, mask):
    model.zero_grad()
    logprobs, _ = policy_logprobs(model, sequences, mask, 4)
    (logprobs * mask[:, 4:]).sum().backward()
    return logprobs.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _rows(batch, width):
    sequences = torch.randint(1, 40, (batch, width))
    mask = torch.ones_like(sequences)
    mask[0, :2] = 0  # left padding and a short response: the position ids and masks the trainers pass
    mask[-1, -3:] = 0
    return sequences * mask, mask


def test_compiled_blocks_match_eager_and_take_new_shapes_without_recompiling():
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    eager = LlamaForCausalLM(LlamaConfig(**SHAPE))
    compiled = LlamaForCausalLM(LlamaConfig(**SHAPE))
    compiled.load_state_dict(eager.state_dict())
    assert compile_blocks(compiled) == 2
    assert list(compiled.state_dict()) == list(eager.state_dict())  # what checkpoints and weight pushes read
    for index, (batch, width) in enumerate([(3, 12), (5, 17), (2, 9)]):
        sequences, mask = _rows(batch, width)
        want_logprobs, want_grads = _logprobs_and_grads(eager, sequences, mask)
        got_logprobs, got_grads = _logprobs_and_grads(compiled, sequences, mask)
        torch.testing.assert_close(got_logprobs, want_logprobs, rtol=1e-5, atol=1e-5)
        for name, grad in want_grads.items():
            torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)
        if index == 0:
            graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0 and counters["stats"]["unique_graphs"] == graphs, "a new batch size or width recompiled a block"


@pytest.mark.slow
def test_grpo_with_compiled_trainers_scores_its_first_step_as_eager(tiny_assets, ray_session, tmp_path):
    def run(compile_: bool):
        out = tmp_path / f"compile_{compile_}"
        cfg = load(os.path.join(CONFIGS, "grpo_tiny.yaml"), [
            f"model.path={tiny_assets.policy}", f"data.train_path={tiny_assets.data / 'task_train.jsonl'}",
            f"trainer.output_dir={out}", "trainer.steps=2", "trainer.save_steps=0", "trainer.save_hf_model=false",
            "logging.progress=false", "ray.policy.replicas=1", "rollout.engine=builtin", "trainer.zero_stage=0",
            f"trainer.compile={str(compile_).lower()}",
        ])
        run_training(cfg)
        return read_metrics(str(out))

    eager, compiled = run(False), run(True)
    assert [m["step"] for m in compiled] == [1, 2]
    # The same rollouts (the engine is not compiled and both start from the same weights), scored by compiled
    # policy and reference forwards: the losses and the KL agree to float32 rounding.
    assert compiled[0]["reward/mean"] == eager[0]["reward/mean"]
    for key in ("policy/loss", "kl/mean", "policy/approx_kl", "policy/clipfrac", "policy/entropy"):
        assert compiled[0][key] == pytest.approx(eager[0][key], rel=1e-3, abs=1e-6), key
