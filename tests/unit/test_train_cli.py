"""Pieces of `rlhf train` that need no Ray."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_process_start_counts_the_time_before_rlhf_was_imported():
    """`timing/startup_s` counts from the process's start: a second spent before the import is inside it."""
    code = ("import time; time.sleep(1.0); from rlhf.train import process_started_at; "
            "print(time.time() - process_started_at())")
    elapsed = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 1.0 <= elapsed < 30.0
