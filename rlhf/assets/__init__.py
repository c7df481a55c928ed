"""Tiny local assets: a BPE tokenizer, random-init Llama policy and reward models, and
the task datasets, all built offline and loaded through the usual ``from_pretrained`` paths.

Heavy imports (transformers, torch) happen on first use of ``build_assets`` etc.,
so importing ``rlhf.assets`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlhf.assets.build import AssetPaths, build_assets, load_manifest
    from rlhf.assets.spec import TinyModelSpec

__all__ = ["AssetPaths", "TinyModelSpec", "build_assets", "load_manifest"]

_LAZY = {
    "AssetPaths": "rlhf.assets.build",
    "build_assets": "rlhf.assets.build",
    "load_manifest": "rlhf.assets.build",
    "TinyModelSpec": "rlhf.assets.spec",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlhf.assets' has no attribute {name!r}")
