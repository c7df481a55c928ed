"""The driver imports every mode and actor module before Ray starts; what it imports is start-up time
every run waits for (ppo_tiny: about 1.5 s of transformers' modeling code and DeepSpeed on 2 cores).
Only the actors load models and engines, so those imports must stay inside them."""
from __future__ import annotations

import subprocess
import sys

DRIVER_MODULES = ["rlhf.cli", "rlhf.train", "rlhf.preflight", "rlhf.evaluation.leakage", "rlhf.pipeline.runner",
                  "rlhf.modes.runtime", "rlhf.modes.ppo", "rlhf.modes.dpo", "rlhf.modes.sft", "rlhf.modes.rlaif",
                  "rlhf.modes.distill", "rlhf.modes.reward_model"]
ACTOR_ONLY = ["deepspeed", "transformers.modeling_utils", "peft", "vllm"]


def test_driver_modules_import_no_model_or_engine_code():
    # A fresh interpreter: this test process has long since imported everything.
    code = (f"import importlib, sys\nfor m in {DRIVER_MODULES!r}: importlib.import_module(m)\n"
            f"print([m for m in {ACTOR_ONLY!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", done.stdout


def test_the_command_line_parser_imports_no_torch_transformers_or_ray():
    # `rlhf --help` and every subcommand's argument errors answer at once; a run imports these later, when
    # it needs them (the config checks import torch, the tokenizer transformers, the start Ray).
    code = ("import sys\nfrom rlhf.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('torch', 'transformers', 'ray') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
