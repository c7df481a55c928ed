"""DeepSpeed checkpoints without pickle code execution on load.

DeepSpeed's own engine writes every file with `torch.save` and reads it back with
`torch.load(weights_only=False)`: opening a checkpoint from someone else could run their
code. This engine, plugged into a DeepSpeed engine, keeps DeepSpeed's layout and its exact
resume (ZeRO partitions, optimizer moments, step counters) but:
- writes the module weights of the model-states file as safetensors beside it (the `.pt`
  keeps only the small bookkeeping: shapes, versions, counters);
- reads every `.pt` with `torch.load(weights_only=True)`, which rebuilds only tensors,
  containers, numbers and the few plain DeepSpeed records listed in `_SAFE_GLOBALS`
  (never calls an arbitrary callable from the file).
"""
from __future__ import annotations

import os
from typing import Any

import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
from safetensors.torch import load_file, save_file

MODULE_KEY = "module"
WEIGHTS_SUFFIX = ".module.safetensors"


def _safe_globals() -> list:
    """Plain data classes DeepSpeed puts into its state files (state only, no behaviour on load)."""
    from collections import OrderedDict, defaultdict

    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address, OrderedDict, defaultdict, dict,
            torch.Size]


def weights_path(pt_path: str) -> str:
    return pt_path + WEIGHTS_SUFFIX


def safe_load(path: str, map_location: Any = None) -> Any:
    """`torch.load` restricted to tensors, containers and the allowlisted DeepSpeed records."""
    with torch.serialization.safe_globals(_safe_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


class SafeCheckpointEngine(TorchCheckpointEngine):
    def save(self, state_dict: Any, path: str) -> None:
        if isinstance(state_dict, dict) and isinstance(state_dict.get(MODULE_KEY), dict):
            module = state_dict[MODULE_KEY]
            # clone: safetensors refuses tensors sharing storage (tied embeddings); load copies both.
            save_file({k: v.detach().contiguous().clone().cpu() for k, v in module.items()}, weights_path(path))
            state_dict = {**state_dict, MODULE_KEY: None}
        torch.save(state_dict, path)

    def load(self, path: str, map_location: Any = None) -> Any:
        state = safe_load(path, map_location=map_location)
        if isinstance(state, dict) and MODULE_KEY in state and state[MODULE_KEY] is None:
            if not os.path.isfile(weights_path(path)):
                raise FileNotFoundError(f"{weights_path(path)}: weights file of {path} is missing")
            state[MODULE_KEY] = load_file(weights_path(path))
        return state
