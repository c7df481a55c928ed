"""What building a DeepSpeed engine costs a trainer process at start-up, in a fresh one-rank process."""
from __future__ import annotations

import subprocess
import sys

import torch

from rlhf.training.deepspeed_model import compile_on_first_call

TRAIN_ONE_STEP = """
import sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from rlhf.training.deepspeed_model import DeepSpeedModel, deepspeed_config
from rlhf.training.distributed import free_port, init_process_group
init_process_group(0, 1, "127.0.0.1", free_port(), timeout_s=30)
model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=2))
engine = DeepSpeedModel(model, deepspeed_config(ZERO_STAGE, 2, 1, 1, 1e-3, 0.0, 1.0, "float32"))
loss = engine.module(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss
print("applied", engine.backward_step(loss))
print("compiler loaded", "torch._inductor.compile_fx" in sys.modules)
"""


def test_zero_engines_build_and_step_without_loading_torchs_compiler():
    # Both ZeRO optimizer checks and ZeRO-1/2's gradient reduction import DeepSpeed's Muon optimizer,
    # whose module-level torch.compile would load torch._inductor (0.9 s of CPU per trainer process).
    for stage in (0, 2):
        done = subprocess.run([sys.executable, "-c", TRAIN_ONE_STEP.replace("ZERO_STAGE", str(stage))],
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-2:] == ["applied True", "compiler loaded False"], (stage, done.stdout)


def test_compile_on_first_call_compiles_once_when_first_called(monkeypatch):
    compiled_for = []

    def fake_compile(fn):
        compiled_for.append(fn.__name__)
        return lambda *args: fn(*args) + 1

    monkeypatch.setattr(torch, "compile", fake_compile)

    @compile_on_first_call()
    def double(x):
        """Doubles."""
        return 2 * x

    assert compiled_for == [] and double.__name__ == "double" and double.__doc__ == "Doubles."
    assert (double(3), double(4)) == (7, 9)
    assert compiled_for == ["double"]
