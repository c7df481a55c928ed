"""Helpers that run real servers for the reward-source tests.

`start_reward_server` launches the shipped `python -m rlhf.rewards.server` as a process.
`FaultyServer` stands in for a third-party reward or judge endpoint that misbehaves on
purpose (down, slow, wrong count, non-numbers, fails then recovers): our client must
cope with any server, not only ours, so the fault injection lives here, in the tests.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up in {timeout_s}s")


def start_reward_server(port: int, function: str = "rlhf.tasks:letter_reward",
                        api_key_env: Optional[str] = None, env: Optional[dict] = None) -> subprocess.Popen:
    """The shipped reward server on 127.0.0.1:port, returned once /health answers."""
    cmd = [sys.executable, "-m", "rlhf.rewards.server", "--function", function, "--port", str(port)]
    if api_key_env:
        cmd += ["--api-key-env", api_key_env]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env or dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health")
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"reward server did not start: {proc.communicate()[0][-2000:]}") from None
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class FaultyServer:
    """A JSON server on a thread; `respond(body, request_number)` returns (status, payload, delay_s)."""

    def __init__(self, respond: Callable[[dict, int], tuple[int, object, float]], port: int = 0) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                outer.requests += 1
                status, payload, delay = respond(body, outer.requests)
                time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up waiting
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
