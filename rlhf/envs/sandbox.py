"""Run untrusted Python (the `python` tool) in a child process with hard limits.

What is enforced, and how:
- wall clock: the child runs in its own process group, killed (SIGKILL) at `timeout_s`;
- CPU time, address space, file size, open files: `resource.setrlimit` in the child
  (RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE); stdout and stderr go to a file, so an
  output flood stops at the file-size limit instead of filling the driver's memory;
- processes: a guard refuses fork/exec/subprocess before the code runs (audit hooks, PEP 578),
  and RLIMIT_NPROC caps what slips past it (the kernel ignores that limit for root outside a
  user namespace, hence the namespace below); the whole group is killed at the end either way;
- files: the working folder is a fresh empty temporary folder; the guard refuses opening for
  writing, creating, renaming or deleting any path outside it;
- network: where `unshare -rn` works the child runs in an empty network namespace (no
  interfaces but loopback, which is down); everywhere, the guard refuses creating sockets.
The audit-hook guard is best effort (code using ctypes can step around it, and ctypes loading
is refused for that reason); the rlimits, the namespace and the wall-clock kill are enforced by
the kernel. Every failure comes back as an error text, never as an exception or a hang.
"""
from __future__ import annotations

import functools
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

# Runs in the child before the user's code: installs the guard, then executes main.py.
_GUARD = r'''
import os, sys
_root = os.path.realpath(os.getcwd())
_code = open("main.py", encoding="utf-8").read()
def _inside(path):
    try:
        real = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return real == _root or real.startswith(_root + os.sep)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
                "os.link", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}
_REFUSED = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.kill",
            "subprocess.Popen", "pty.spawn", "ctypes.dlopen", "ctypes.cdata", "os.startfile"}
def _guard(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
        if writing and not isinstance(path, int) and not _inside(path):
            raise PermissionError(f"sandbox: writing outside the working folder is refused ({path})")
    elif event in _PATH_EVENTS:
        for arg in args:
            if isinstance(arg, (str, bytes, os.PathLike)) and not _inside(arg):
                raise PermissionError(f"sandbox: {event} outside the working folder is refused ({arg})")
    elif event in _REFUSED:
        raise PermissionError(f"sandbox: {event} is refused (no processes)")
    elif event.startswith("socket."):
        raise PermissionError("sandbox: network access is refused")
sys.addaudithook(_guard)
exec(compile(_code, "main.py", "exec"), {"__name__": "__main__"})
'''


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0
    """Wall-clock limit; the process group is killed when it passes."""
    memory_mb: int = 512
    """Address-space limit (RLIMIT_AS) of the child."""
    output_bytes: int = 16_384
    """stdout+stderr kept (and the size limit of any file the code writes)."""
    max_processes: int = 8
    """RLIMIT_NPROC inside the user namespace."""


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    """True when the code ran to completion with exit status 0 within every limit."""
    output: str
    """stdout and stderr, at most `output_bytes`, decoded leniently; an error note when not ok."""
    elapsed_s: float


@functools.lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """Whether `unshare -rn` can give the child an empty network namespace on this machine."""
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _set_limits(limits: SandboxLimits) -> None:
    cpu = int(limits.timeout_s) + 1
    memory = limits.memory_mb * 2**20
    for kind, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory),
                        (resource.RLIMIT_FSIZE, limits.output_bytes), (resource.RLIMIT_NOFILE, 64),
                        (resource.RLIMIT_NPROC, limits.max_processes), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(kind, (value, value))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` under `limits` in an empty temporary folder; never raises, never outlives the timeout."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rlhf-sandbox-") as work, \
            tempfile.TemporaryDirectory(prefix="rlhf-sandbox-out-") as private:
        with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as fh:
            fh.write(code)
        command = [sys.executable, "-I", "-B", "-c", _GUARD]
        if network_namespace_available():
            command = ["unshare", "-rn", "--"] + command
        out_path = os.path.join(private, "output")
        timed_out = False
        with open(out_path, "wb") as out:
            try:
                proc = subprocess.Popen(command, cwd=work, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env={"PATH": "/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8"},
                                        preexec_fn=functools.partial(_set_limits, limits))
            except OSError as err:
                return SandboxResult(False, f"error: could not start python ({err})", time.monotonic() - start)
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc.pid)  # also any child that outlived the main process
            proc.wait()
        with open(out_path, "rb") as fh:
            raw = fh.read(limits.output_bytes)
    elapsed = time.monotonic() - start
    output = raw.decode("utf-8", errors="replace")
    return SandboxResult(*_verdict(proc.returncode, timed_out, len(raw) >= limits.output_bytes, output, limits),
                         elapsed)


def _verdict(returncode: int, timed_out: bool, flooded: bool, output: str, limits: SandboxLimits) -> tuple[bool, str]:
    """(ok, text) for a finished child: what went wrong first, then what it printed."""
    if timed_out:
        note = f"error: timed out after {limits.timeout_s:g}s (killed)"
    elif flooded:
        note = f"error: output over {limits.output_bytes} bytes (cut off)"
    elif returncode == -signal.SIGXCPU:
        note = "error: CPU time limit exceeded"
    elif returncode < 0:
        note = f"error: killed by signal {signal.Signals(-returncode).name}"
    elif "MemoryError" in output:
        note = f"error: memory limit of {limits.memory_mb} MB exceeded"
    elif returncode != 0:
        note = f"error: exit status {returncode}"
    else:
        return True, output
    return False, note + ("\n" + output if output else "")
