"""`rlhf plot` on the metrics of a real short run: PNG files that are real, non-blank images."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from rlhf.cli import main
from rlhf.train import run_training

from test_modes import mode_config  # noqa: E402

pytestmark = pytest.mark.slow


def assert_real_pngs(paths: list[str], names: set[str]) -> None:
    """Each path a PNG of nonzero size whose pixels are not all one colour; the file stems are `names`."""
    assert {os.path.splitext(os.path.basename(p))[0] for p in paths} == names, paths
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100, (path, image.size)
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 1.0 and len(np.unique(pixels)) > 10, path


def test_plot_writes_the_curves_of_a_real_sft_run(tiny_assets, ray_session, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = mode_config("sft", tiny_assets, run_dir, "data.train_path=DATA/sft_train.jsonl",
                      "data.eval_path=DATA/sft_eval.jsonl", "trainer.steps=4", "eval.every_steps=2",
                      "ray.policy.replicas=1", "trainer.save_hf_model=false")
    run_training(cfg)
    capsys.readouterr()
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "plots")]) == 0
    paths = capsys.readouterr().out.split()
    assert all(p.startswith(str(tmp_path / "plots")) for p in paths)
    assert_real_pngs(paths, {"losses", "eval"})
    # A run killed mid-write leaves a truncated last line: still plotted, with a warning.
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 5, "sft/lo')
    assert main(["plot", str(run_dir)]) == 0
    assert_real_pngs(capsys.readouterr().out.split(), {"losses", "eval"})
