"""metrics.jsonl and W&B (offline, as on machines without internet), including a resumed run."""
from __future__ import annotations

import glob
import json

from rlhf.config import WandbConfig
from rlhf.metrics import MetricsLogger, read_metrics


def test_jsonl_and_offline_wandb_with_resume(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wandb_cfg = WandbConfig(enabled=True, project="rlhf-test", mode="auto")
    logger = MetricsLogger(str(tmp_path), {"trainer": {"steps": 3}}, wandb_cfg, progress=False, total_steps=3)
    assert logger.wandb is not None and logger.wandb.settings.mode == "offline"
    for step in (1, 2, 3):
        logger.log(step, {"reward/mean": 0.1 * step, "kl/mean": float("nan")})
    logger.log_samples(3, ["p"], ["r"], [0.5])
    run_id = logger.wandb.id
    logger.close()
    assert glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{run_id}"))
    rows = read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["kl/mean"] is None  # NaN -> null, valid JSON

    # Resuming after step 2: step 3 is run again, so its line is dropped; same W&B run id.
    resumed = MetricsLogger(str(tmp_path), {}, wandb_cfg, progress=False, total_steps=3, start_step=2)
    assert resumed.wandb.id == run_id
    resumed.log(3, {"reward/mean": 0.9})
    resumed.close()
    assert [(r["step"], r["reward/mean"]) for r in read_metrics(str(tmp_path))][-2:] == [(2, 0.2), (3, 0.9)]
    samples = [json.loads(line) for line in open(tmp_path / "samples.jsonl")]
    assert samples == []  # the step-3 samples belonged to the dropped step


def test_wandb_failure_never_stops_training(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    bad = WandbConfig(enabled=True, project="x", mode="online")
    monkeypatch.setattr("wandb.init", lambda **_: (_ for _ in ()).throw(RuntimeError("no network")))
    logger = MetricsLogger(str(tmp_path), {}, bad, progress=False, total_steps=1)
    assert logger.wandb is None
    logger.log(1, {"reward/mean": 1.0})
    logger.close()
    assert read_metrics(str(tmp_path))[0]["reward/mean"] == 1.0


def test_api_key_never_reaches_output_files(tmp_path, monkeypatch):
    # RELIABILITY 12: a key present in the environment is not written by W&B, the JSONL files or
    # the saved config; only the environment variable's name may appear anywhere.
    from rlhf.config import dump, load

    planted = "planted-wandb-key-5e0c71d2aa"
    monkeypatch.setenv("WANDB_API_KEY", planted)
    cfg = load(None, ["model.path=/m", "data.train_path=/d.jsonl", "logging.wandb.enabled=true",
                      "logging.wandb.mode=offline"])
    dump(cfg, tmp_path / "config.yaml")
    logger = MetricsLogger(str(tmp_path), {"logging": {"wandb": {"mode": "offline"}}}, cfg.logging.wandb,
                           progress=False, total_steps=2)
    assert logger.wandb is not None
    for step in (1, 2):
        logger.log(step, {"reward/mean": 0.5})
    logger.close()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)  # the offline run that `wandb sync` uploads later
    for path in files:
        assert planted.encode() not in path.read_bytes(), path
