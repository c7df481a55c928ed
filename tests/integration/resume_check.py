"""The resume-equivalence check the mode tests share: a finished run's copy, stopped right after a
checkpoint and resumed, must log the uninterrupted run's numbers from there on."""
from __future__ import annotations

import dataclasses
import shutil

import pytest

from rlhf.metrics import read_metrics
from rlhf.train import run_training


def resume_matches_the_run(cfg, rows: list[dict], at: int, keys, tmp_path, tolerance: float = 1e-5) -> list[dict]:
    """A copy of the run stopped right after its step-`at` checkpoint, resumed: every later step logs the
    uninterrupted run's numbers (same batches, same optimizer and sampler state) for each of `keys`, and
    each key is compared at least once. Returns the resumed run's rows."""
    out = tmp_path / "resumed"
    shutil.copytree(cfg.trainer.output_dir, out)
    shutil.rmtree(out / "checkpoints" / f"step_{cfg.trainer.steps}")
    run_training(dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, output_dir=str(out))), resume=True)
    resumed = read_metrics(str(out))
    assert [r["step"] for r in resumed] == [r["step"] for r in rows]
    compared = set()
    for a, b in zip(resumed, rows):
        for key in keys:
            if a["step"] > at and key in b:
                assert a[key] == pytest.approx(b[key], abs=tolerance), (a["step"], key)
                compared.add(key)
    assert compared == set(keys), set(keys) - compared
    return resumed
