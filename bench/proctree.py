"""Run a command and watch its whole process tree: wall time, peak summed RSS and PSS.

A local Ray started by `rlhf train` is a child of the driver (gcs_server, raylet) and the actors
are the raylet's children, so the tree holds every process of our run. Summed RSS counts shared
pages (the torch libraries every process maps) once per process; PSS splits them fairly, so it
is the better number for "memory of the run"; both are reported.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class TreeRun:
    returncode: int
    wall_s: float
    peak_rss_mb: float
    peak_pss_mb: float
    peak_processes: int
    peak_by_name_mb: dict[str, float] = field(default_factory=dict)


def _session_id(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[4])
    except (OSError, IndexError, ValueError):
        return -1


def _tree(root: psutil.Process) -> list[psutil.Process]:
    """The root, its descendants, and anything else in the session the root leads (orphans included)."""
    found = {}
    try:
        for proc in [root, *root.children(recursive=True)]:
            found[proc.pid] = proc
    except psutil.NoSuchProcess:
        pass
    for pid in psutil.pids():
        if pid not in found and _session_id(pid) == root.pid:
            try:
                found[pid] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                pass
    return list(found.values())


def _label(proc: psutil.Process) -> str:
    """'ray::TrainingActor', 'raylet', 'python' ...: what a process is, for the per-kind peak."""
    try:
        name = proc.name()
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if cmd and cmd[0].startswith("ray::"):
        return cmd[0].split(" ")[0].split(".")[0]  # ray::TrainingActor.train -> ray::TrainingActor
    return name


def _sample(root: psutil.Process, with_pss: bool) -> tuple[float, float, int, dict[str, float]]:
    rss = pss = 0.0
    by_name: dict[str, float] = {}
    procs = _tree(root)
    for proc in procs:
        try:
            if with_pss:
                info = proc.memory_full_info()
                pss += info.pss
            else:
                info = proc.memory_info()
            rss += info.rss
            label = _label(proc)
            by_name[label] = by_name.get(label, 0.0) + info.rss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            continue
    return rss / 2**20, pss / 2**20, len(procs), by_name


def run_tree(cmd: list[str], env: dict, log_path: str, timeout_s: float, interval_s: float = 0.5) -> TreeRun:
    """Run `cmd` with stdout+stderr to `log_path`; kill the whole tree on timeout."""
    peak = {"rss": 0.0, "pss": 0.0, "procs": 0, "by_name": {}}
    stop = threading.Event()
    with open(log_path, "w") as log:
        start = time.perf_counter()
        popen = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        root = psutil.Process(popen.pid)

        def watch() -> None:
            tick = 0
            while not stop.is_set():
                rss, pss, n, by_name = _sample(root, with_pss=tick % 4 == 0)  # PSS reads smaps: every 4th tick
                if rss > peak["rss"]:
                    peak.update(rss=rss, procs=n, by_name=by_name)
                peak["pss"] = max(peak["pss"], pss)
                tick += 1
                stop.wait(interval_s)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            returncode = popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_tree(root)
            returncode = popen.wait()
        wall = time.perf_counter() - start
        stop.set()
        watcher.join()
        kill_tree(root)  # leftovers (a Ray the driver failed to stop) must not outlive the run
    return TreeRun(returncode, wall, peak["rss"], peak["pss"], peak["procs"], peak["by_name"])


def kill_tree(root: psutil.Process) -> None:
    procs = _tree(root)
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"
