"""`rlhf.quiet.install` turns transformers' progress bars off whether transformers is imported before or after it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("transformers_first", [False, True])
def test_install_disables_progress_bars_either_import_order(transformers_first):
    imports = "import transformers.utils.logging as hf\n"
    code = ((imports if transformers_first else "") + "from rlhf.quiet import install\ninstall()\n" +
            ("" if transformers_first else imports) + "print(hf.is_progress_bar_enabled())")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
