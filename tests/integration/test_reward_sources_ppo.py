"""PPO on real Ray with each reward source, switched by `reward.source` alone, and the data rules.

The `function` source is what test_ppo.py runs. Here: `model` (the tiny reward model),
`judge` (the tiny judge LM, AI feedback: the same config as the model run but for this one
key), and `http` (the shipped reward server as a process, taken down mid-run: the step
waits through the retries and goes on when it returns; taken down for good, the run stops
naming the URL, within the retry bound, without training on made-up scores).
Runs are small (critic-free, one policy replica, a few steps) to keep actor start-up cheap.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest
from reward_servers import free_port, start_reward_server, stop

from rlhf.config import ConfigError, load
from rlhf.data.reader import DataError
from rlhf.metrics import read_metrics
from rlhf.tasks import letter_reward
from rlhf.train import run_training

pytestmark = pytest.mark.slow

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "ppo_tiny.yaml")


def small_config(assets, output_dir, *extra):
    return load(CONFIG, [
        f"model.path={assets.policy}",
        f"data.train_path={assets.data / 'task_train.jsonl'}",
        f"trainer.output_dir={output_dir}",
        "trainer.steps=3",
        "trainer.save_steps=0",
        "trainer.save_hf_model=false",
        "algorithm.advantage=grpo",
        "ray.policy.replicas=1",
        "ray.reference_in_policy=true",  # one process fewer; the four-group layout is test_ppo's
        "logging.progress=false",
        *extra,
    ])


def _check_ran(cfg, steps):
    metrics = read_metrics(cfg.trainer.output_dir)
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    for m in metrics:
        assert m["reward/invalid"] == 0 and m["train/skipped_update"] == 0
    return metrics


def test_model_and_judge_sources_differ_by_one_key(tiny_assets, ray_session, tmp_path):
    # A policy folder whose tokenizer has no chat template and whose context is short: the run
    # needs data.chat_template_path, and prompts that do not fit context - max_new_tokens are dropped.
    policy = tmp_path / "policy_no_template"
    shutil.copytree(tiny_assets.policy, policy)
    template_file = tmp_path / "template.jinja"
    tok_cfg = json.loads((policy / "tokenizer_config.json").read_text())
    template = tok_cfg.pop("chat_template", None)
    if template is None:
        template = (policy / "chat_template.jinja").read_text()
        (policy / "chat_template.jinja").unlink()
    (policy / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    template_file.write_text(template)
    model_cfg = json.loads((policy / "config.json").read_text())
    model_cfg["max_position_embeddings"] = 30  # 30 - 12 new tokens leaves 18: about half the prompts
    (policy / "config.json").write_text(json.dumps(model_cfg))
    # A few malformed rows, skipped and counted.
    data = tmp_path / "train.jsonl"
    good = (tiny_assets.data / "task_train.jsonl").read_text().splitlines()
    data.write_text("\n".join(good[:2] + ['{"prompt": 5}', "{broken"] + good[2:]) + "\n")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets.policy)
    common = [f"model.path={policy}", f"data.train_path={data}", "data.on_bad_row=skip",
              f"model.reward_path={tiny_assets.reward}", f"reward.judge.model_path={tiny_assets.judge}"]

    # Without the template file the run stops before any actor exists, with the fix.
    no_template = small_config(tiny_assets, tmp_path / "none", *common)
    with pytest.raises(DataError, match="has no chat template: set data.chat_template_path"):
        run_training(no_template)
    assert not (tmp_path / "none" / "placement.json").exists()  # written once the groups are placed

    for source in ("model", "judge"):
        cfg = small_config(tiny_assets, tmp_path / source, *common, f"data.chat_template_path={template_file}",
                           f"reward.source={source}")
        summary = run_training(cfg)
        metrics = _check_ran(cfg, 3)
        assert summary["reward_source"] == source
        report = json.loads((tmp_path / source / "data_report.json").read_text())
        assert report["skipped_bad"] == 2 and report["first_bad"][0].startswith(f"{data}:3: ")
        assert report["prompt_limit"] == 18 and report["dropped_oversize"] > 0
        samples = [json.loads(line) for line in open(tmp_path / source / "samples.jsonl")]
        assert samples and all(s["prompt"].startswith("<s><|user|>") for s in samples)
        assert all(len(tokenizer(s["prompt"], add_special_tokens=False)["input_ids"]) <= 18 for s in samples)
        # The scores are the named source's, not the default letters function's on the same samples.
        letters = letter_reward([s["prompt"] for s in samples], [s["response"] for s in samples])
        assert any(abs(score - s["score"]) > 1e-3 for score, s in zip(letters, samples)), source


def test_weighted_source_scores_are_the_weighted_sum_of_its_sources(tiny_assets, ray_session, tmp_path):
    from rlhf.rewards.factory import build_reward_source

    cfg = small_config(tiny_assets, tmp_path / "weighted", "reward.source=weighted",
                       "reward.weights={function: 1.0, judge: 0.5}", f"reward.judge.model_path={tiny_assets.judge}")
    summary = run_training(cfg)
    _check_ran(cfg, 3)
    assert summary["reward_source"] == "weighted"
    samples = [json.loads(line) for line in open(tmp_path / "weighted" / "samples.jsonl")]
    prompts, responses = [s["prompt"] for s in samples], [s["response"] for s in samples]
    # The same sources built on the driver and scored on the logged samples: 1.0 * letters + 0.5 * judge.
    judge_cfg = small_config(tiny_assets, tmp_path / "j", "reward.source=judge",
                             f"reward.judge.model_path={tiny_assets.judge}")
    judge = build_reward_source(judge_cfg).score(prompts, responses).tolist()
    letters = letter_reward(prompts, responses)
    for sample, letter, judged in zip(samples, letters, judge):
        assert sample["score"] == pytest.approx(letter + 0.5 * judged, abs=1e-4), sample
    assert any(abs(judged) > 1e-3 for judged in judge)  # the judge's part is there to see


def test_http_source_survives_an_outage_then_fails_naming_the_url_and_resumes(tiny_assets, ray_session, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/score"
    # Retry waits 0.5, 1, 2, 4 s (the 5 s window is spent by then): a server back within ~7 s is used;
    # one that stays down fails the step, after an emergency checkpoint of the last completed step.
    overrides = ("reward.source=http", f"reward.http.url={url}", "reward.remote.timeout_s=5",
                 "reward.remote.max_retries=4", "reward.remote.backoff_s=0.5", "reward.http.retry_window_s=5")
    cfg = small_config(tiny_assets, tmp_path / "http", *overrides, "trainer.steps=8")
    server = {"proc": start_reward_server(port)}
    events = {}
    metrics_path = os.path.join(cfg.trainer.output_dir, "metrics.jsonl")

    def steps_done() -> int:
        try:
            return len(open(metrics_path).read().splitlines())
        except FileNotFoundError:
            return 0

    def outages():
        while steps_done() < 2:
            time.sleep(0.05)
        stop(server["proc"])  # down before step 3 scores
        time.sleep(1.0)
        server["proc"] = start_reward_server(port)  # back within the retry window
        while steps_done() < 4:
            time.sleep(0.05)
        stop(server["proc"])  # down for good before step 5 scores
        events["down_for_good"] = time.monotonic()

    watcher = threading.Thread(target=outages, daemon=True)
    watcher.start()
    try:
        with pytest.raises(Exception) as err:
            run_training(cfg)
        failed_at = time.monotonic()
    finally:
        watcher.join(timeout=30)
        stop(server["proc"])
    message = str(err.value)
    assert f"{url}: gave up after 5 attempts" in message and "cannot connect" in message, message[-2000:]
    # No lost work: save_steps=0, yet the last completed step is on disk and the error names it.
    emergency = os.path.join(cfg.trainer.output_dir, "checkpoints", "step_4")
    assert type(err.value).__name__ == "PhaseFailed" and emergency in message, message[-2000:]
    assert os.path.isfile(os.path.join(emergency, "manifest.json"))
    # Bounded: 7.5 s of backoff (connection refused answers at once) plus the step's other work and shutdown.
    assert failed_at - events["down_for_good"] < 7.5 + 30
    metrics = _check_ran(cfg, 4)  # steps 1-4 trained; step 5 never trained on invented scores
    # Step 3 waited for the server to come back (its scoring spans the outage); step 2 did not.
    assert metrics[2]["timing/experience_s"] > metrics[1]["timing/experience_s"] + 0.5, metrics[2]
    assert "Authorization" not in open(os.path.join(cfg.trainer.output_dir, "config.yaml")).read()

    # The server is back: --resume continues with step 5, no step lost or repeated.
    server["proc"] = start_reward_server(port)
    try:
        run_training(small_config(tiny_assets, tmp_path / "http", *overrides, "trainer.steps=6"), resume=True)
    finally:
        stop(server["proc"])
    resumed = _check_ran(cfg, 6)
    assert resumed[:4] == metrics


def test_reward_config_errors_before_any_actor(tiny_assets, tmp_path):
    with pytest.raises(ConfigError, match="^reward.http.url: must be an http"):
        small_config(tiny_assets, tmp_path / "x", "reward.source=http")
