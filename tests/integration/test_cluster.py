"""A real three-node Ray cluster on this machine (launch/start_cluster.sh) and PPO jobs submitted
with `ray job submit` (launch/submit_ppo.sh), with faults injected from outside the job:
a killed rollout engine and reference actor, `ray job stop`, a killed policy rank, a lost node.

The cluster has its own temp dir and port range and is always torn down by launch/stop_cluster.sh,
which touches only its own processes (other Ray instances on the machine keep running).
RELIABILITY tests 1, 10, 11 and 12 (job metadata) are here; the tests run in file order.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from rlhf.kl import AdaptiveKLController
from rlhf.metrics import read_metrics

pytestmark = pytest.mark.slow

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLANTED = {"WANDB_API_KEY": "planted-wandb-key-6f1c2e9a7b", "RLHF_JUDGE_API_KEY": "planted-judge-key-93d0aa41"}
FAST = ["trainer.prompts_per_step=4", "rollout.samples_per_prompt=4", "rollout.max_new_tokens=8",
        "trainer.mini_batch_size=16", "trainer.micro_batch_size=8", "algorithm.ppo_epochs=1",
        "ray.rollout.num_cpus=1", "trainer.save_steps=2"]


def _ports_free(base: int) -> bool:
    for port in [base, base + 390] + [base + off + i for off in (0, 100, 200) for i in range(3, 10)]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class Cluster:
    def __init__(self, assets) -> None:
        self.dir = tempfile.mkdtemp(prefix="rlhf-c", dir="/tmp")  # short: Ray's socket paths are limited
        base = next(b for b in range(31000 + (os.getpid() % 40) * 400, 60000, 400) if _ports_free(b))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
        env.update(PLANTED)  # secrets reach the jobs through the nodes' environment, never the job spec
        env.update(PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
                   RLHF_CLUSTER_DIR=self.dir, RLHF_PORT_BASE=str(base), RLHF_DASHBOARD_PORT=str(base + 390),
                   RLHF_HEAD_CPUS="2", RLHF_WORKER_CPUS="3", RLHF_ASSETS=str(assets.root), RAY_AUTH_MODE="token",
                   COLUMNS="80")  # a narrow terminal must not hide the nodes' processes from stop_cluster.sh
        self.env = env
        self.address = f"http://127.0.0.1:{base + 390}"

    def script(self, name: str, *args: str, timeout: float = 240) -> str:
        done = subprocess.run(["bash", os.path.join(ROOT, "launch", name), *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{name} {args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    def ray(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(["ray", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        return done.stdout + done.stderr

    def submit(self, job_id: str, out: str, *overrides: str, resume: bool = False) -> None:
        env = {**self.env, "RLHF_NO_WAIT": "1", "RLHF_SUBMISSION_ID": job_id, "RLHF_OUTPUT_DIR": out}
        args = [a for o in [*FAST, *overrides] for a in ("--set", o)] + (["--resume"] if resume else [])
        done = subprocess.run(["bash", os.path.join(ROOT, "launch", "submit_ppo.sh"), *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    def status(self, job_id: str) -> str:
        text = self.ray("job", "status", job_id, "--address", self.address)
        # Ray's CLI prints "Job 'x' succeeded" / "was stopped" / "failed" at the end, else "Status for job 'x': S".
        for phrase, status in (("' succeeded", "SUCCEEDED"), ("' was stopped", "STOPPED"), ("' failed", "FAILED")):
            if phrase in text:
                return status
        found = re.findall(r"Status for job '[^']+': (\w+)", text)
        return found[-1] if found else "UNKNOWN"

    def wait_status(self, job_id: str, wanted: set[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(job_id)
            if status in wanted or status in {"SUCCEEDED", "FAILED", "STOPPED"}:
                return status
            time.sleep(3)
        raise AssertionError(f"job {job_id} not in {wanted} after {timeout}s; logs:\n{self.logs(job_id)[-4000:]}")

    def logs(self, job_id: str) -> str:
        return self.ray("job", "logs", job_id, "--address", self.address)

    def explain(self, job_id: str):
        """For wait_for: the job's status and the tail of its logs."""
        return lambda: f"job {job_id}: {self.status(job_id)}; logs:\n{self.logs(job_id)[-4000:]}"


@pytest.fixture(scope="module")
def cluster(tiny_assets):
    c = Cluster(tiny_assets)
    try:
        c.script("start_cluster.sh")
        yield c
    finally:
        try:
            c.script("stop_cluster.sh", timeout=120)
        finally:
            shutil.rmtree(c.dir, ignore_errors=True)


def wait_for(predicate, timeout: float, what: str, explain=lambda: ""):
    """Poll `predicate`; on timeout fail with `explain()` (a job's log tail) so CI shows why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{explain()}")


def steps_done(out: str) -> int:
    try:
        return len(read_metrics(out))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def placement(out: str) -> dict:
    try:
        with open(os.path.join(out, "placement.json")) as fh:
            return json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def assert_kl_coef_continues(rows: list[dict], cfg_kl: dict, batch: int) -> None:
    """Every step's coefficient is the adaptive update of the previous one, across resumes too."""
    for now, nxt in zip(rows, rows[1:]):
        ctl = AdaptiveKLController(now["kl/coef"], cfg_kl["target"], cfg_kl["horizon"])
        ctl.update(now["kl/mean"], n_steps=batch)
        assert nxt["kl/coef"] == pytest.approx(ctl.value, rel=1e-9), nxt["step"]


def test_ppo_job_spreads_over_nodes_and_survives_engine_and_reference_kills(cluster, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("job_a"))
    # old_logprobs: recompute, so every step measures the engine's log-probs against the trainer's.
    # The reward takes half a second, so the kills land in different steps however fast the machine's steps
    # are (0.12 s on an Intel Xeon, where all three kills fell within one poll and the log lacked the deaths).
    cluster.submit("rlhf-a", out, "trainer.steps=12", "logging.wandb.enabled=true", "logging.wandb.mode=offline",
                   "algorithm.old_logprobs=recompute",
                   "reward.function=tests.integration.fault_rewards:slow_letter_reward")
    wait_for(lambda: steps_done(out) >= 1, 400, "the first step", cluster.explain("rlhf-a"))
    os.kill(placement(out)["rollout"][0]["pid"], signal.SIGKILL)
    wait_for(lambda: steps_done(out) >= 4, 300, "step 4 after the engine kill", cluster.explain("rlhf-a"))
    os.kill(placement(out)["reference"][0]["pid"], signal.SIGKILL)
    wait_for(lambda: steps_done(out) >= 6, 300, "step 6 after the reference kill", cluster.explain("rlhf-a"))
    os.kill(placement(out)["reward"][0]["pid"], signal.SIGKILL)
    assert cluster.wait_status("rlhf-a", {"SUCCEEDED"}, 400) == "SUCCEEDED", cluster.logs("rlhf-a")[-4000:]

    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 13))
    logs = cluster.logs("rlhf-a")
    deaths = [line for line in logs.splitlines() if " died" in line or "restarted" in line]
    assert "rollout replica 0 died" in logs and "reference replica 0 died" in logs, deaths
    # The reward worker holds no state: killed between two calls, Ray restarts it before the next one and the
    # driver never sees it fail (not counted); killed during its call, the phase is retried (counted).
    assert rows[-1]["faults/actor_restarts"] == 2 + ("reward replica 0 died" in logs)
    assert all(r["reward/invalid"] == 0 and r["train/skipped_update"] == 0 for r in rows)
    # The restarted engine was given the current weights before it generated again: its log-probs are the
    # trainer's on every step (an engine left with the starting weights is off by far more after step 1).
    assert all(r["rollout/logprob_abs_diff"] < 1e-4 for r in rows), [r["rollout/logprob_abs_diff"] for r in rows]
    where = placement(out)
    policy_nodes = {w["node_id"] for w in where["policy"]}
    assert len(policy_nodes) == 2, where["policy"]  # STRICT_SPREAD: one process group across two nodes
    assert "node_a" in where["rollout"][0]["resources"] and "node_b" in where["critic"][0]["resources"]
    assert where["rollout"][0]["node_id"] != where["critic"][0]["node_id"]
    assert os.path.isfile(os.path.join(out, "final", "config.json"))
    assert os.path.isdir(os.path.join(out, "checkpoints", "step_12"))

    # RELIABILITY 12: the Jobs API answers only on 127.0.0.1, and only with the cluster's token.
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{cluster.address}/api/jobs/", timeout=10)
    assert denied.value.code == 401
    node_ip = where["rollout"][0]["node_ip"]
    if node_ip != "127.0.0.1":  # Ray advertises the machine's own address: the dashboard must not listen there
        with pytest.raises(OSError):
            socket.create_connection((node_ip, int(cluster.address.rsplit(":", 1)[1])), timeout=3).close()

    # RELIABILITY 12: no planted key in any output file, the job's logs or its metadata.
    metadata = cluster.ray("job", "list", "--address", cluster.address)
    assert "rlhf.train" in metadata  # the listing is real
    for name, secret in PLANTED.items():
        assert secret not in logs and secret not in metadata, name
        for folder, _, files in os.walk(out):
            for file in files:
                with open(os.path.join(folder, file), "rb") as fh:
                    assert secret.encode() not in fh.read(), (name, os.path.join(folder, file))


def test_stop_resume_rank_death_and_node_loss(cluster, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("job_b"))

    def submit(job_id: str, *overrides: str, resume: bool = False) -> None:
        # The reference inside the policy replicas: one process fewer per job (no fault here involves it).
        cluster.submit(job_id, out, *overrides, "ray.reference_in_policy=true", resume=resume)

    # RELIABILITY 10: `ray job stop` mid-run -> a checkpoint of the last step, actors gone. The job is
    # far longer than the test waits, so the stop lands mid-run on a fast machine too.
    submit("rlhf-b1", "trainer.steps=1000")
    wait_for(lambda: steps_done(out) >= 3, 400, "step 3", cluster.explain("rlhf-b1"))
    pids = [w["pid"] for group in placement(out).values() for w in group]
    cluster.ray("job", "stop", "rlhf-b1", "--address", cluster.address, timeout=200)
    assert cluster.wait_status("rlhf-b1", {"STOPPED"}, 120) == "STOPPED"
    stopped_at = steps_done(out)
    assert "stop requested: ended after step" in cluster.logs("rlhf-b1")
    assert os.path.isfile(os.path.join(out, "checkpoints", f"step_{stopped_at}", "manifest.json"))
    wait_for(lambda: not any(alive(p) for p in pids), 30, "the stopped job's actors to exit")
    last = stopped_at + 3
    steps = [f"trainer.steps={last}"]  # what the final resume finishes

    # RELIABILITY 1: a policy rank killed after the resume -> the job fails fast naming it. The job is
    # long and saves nothing, so the kill lands mid-run however fast the machine is, and the next
    # resume starts again from the stop's checkpoint (its log lines past it are dropped).
    submit("rlhf-b2", "trainer.steps=1000", "trainer.save_steps=100000", resume=True)
    wait_for(lambda: steps_done(out) >= stopped_at + 1 and {w["pid"] for w in placement(out)["policy"]}.isdisjoint(pids),
             400, "a step of the resumed job", cluster.explain("rlhf-b2"))
    os.kill(placement(out)["policy"][1]["pid"], signal.SIGKILL)
    # Fast: within 90 s of the kill (the survivors would otherwise sit in a collective until its timeout).
    assert cluster.wait_status("rlhf-b2", {"FAILED"}, 90) == "FAILED"
    assert "policy replica 1 died" in cluster.logs("rlhf-b2")

    # RELIABILITY 11: node_b (the critic's node) lost -> placement fails in bounded time naming the group.
    cluster.script("stop_cluster.sh", "node_b")
    submit("rlhf-b3", *steps, "ray.placement_timeout_s=15", resume=True)
    assert cluster.wait_status("rlhf-b3", {"FAILED"}, 180) == "FAILED"  # bounded: the wait raises at 180 s
    assert re.search(r"placement group of critic could not be placed", cluster.logs("rlhf-b3"))

    # The node is back: resume finishes the run; every step ran once and the KL state carried over.
    cluster.script("start_cluster.sh", "node_b")
    submit("rlhf-b4", *steps, resume=True)
    assert cluster.wait_status("rlhf-b4", {"SUCCEEDED"}, 400) == "SUCCEEDED", cluster.logs("rlhf-b4")[-4000:]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, last + 1))
    assert_kl_coef_continues(rows, {"target": 10.0, "horizon": 1000}, batch=16)
