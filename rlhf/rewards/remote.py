"""JSON over HTTP with a timeout, bounded retries and exponential backoff.

Shared by the reward-server source and the judge's API backend. A request that is
refused, times out, gets a 5xx/408/429 or a reply its `check` rejects is retried after
`backoff_s`, `2 * backoff_s`, ... (each wait at most `MAX_BACKOFF_S`) at least `max_retries` times and,
with a `window_s` (`reward.http.retry_window_s`), for as long as that window lasts, so a server that
restarts within it is waited for; then `RemoteError` names the URL, the attempts, the time spent and
the last problem. Other 4xx replies (a wrong
URL or key) fail at once: retrying cannot fix them. Nothing here ever makes up a score.

API keys travel only in the Authorization header: they are read from an environment
variable named in the config and appear in no message, log line or saved file.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

_RETRYABLE_STATUS = {408, 429}
MAX_BACKOFF_S = 10.0
"""Longest wait between two attempts inside a retry window."""


class RemoteError(RuntimeError):
    """A remote reward or judge endpoint failed for good; the message names its URL."""


class _Retryable(Exception):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_s: float = 1.0
    window_s: Optional[float] = None
    """Keep retrying until this many seconds have passed since the first attempt (None: count alone)."""

    def delays(self) -> list[float]:
        """Waits before retry 1, 2, ... that `max_retries` guarantees: backoff_s * 2**i, capped."""
        return [self.delay(i) for i in range(self.max_retries)]

    def delay(self, retry: int) -> float:
        return min(self.backoff_s * 2 ** retry, MAX_BACKOFF_S)

    def retry_after(self, retry: int, elapsed_s: float) -> Optional[float]:
        """The wait before retry number `retry` (0-based), or None when the call should give up."""
        if retry < self.max_retries:
            return self.delay(retry)
        if self.window_s is None or elapsed_s >= self.window_s:
            return None
        return max(0.0, min(self.delay(retry), self.window_s - elapsed_s))

    def worst_case_s(self) -> float:
        """Upper bound on the time one call can take before it gives up."""
        counted = (self.max_retries + 1) * self.timeout_s + sum(self.delays())
        return counted if self.window_s is None else max(counted, self.window_s + self.timeout_s + MAX_BACKOFF_S)

    @classmethod
    def from_config(cls, remote, window_s: Optional[float] = None) -> RetryPolicy:
        return cls(remote.timeout_s, remote.max_retries, remote.backoff_s, window_s)


def read_api_key(env_name: Optional[str], key: str) -> Optional[str]:
    """The secret in environment variable `env_name` (None when no variable is configured)."""
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise RemoteError(f"{key}: environment variable {env_name} is not set (it must hold the API key in the "
                          "environment of the process that calls the endpoint)")
    return value


def _post_once(url: str, payload: bytes, headers: dict, timeout_s: float) -> Any:
    request = urllib.request.Request(url, data=payload, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            body = reply.read()
    except urllib.error.HTTPError as err:
        detail = err.read()[:200].decode("utf-8", "replace")
        problem = f"HTTP {err.code} {err.reason}: {detail}"
        if err.code >= 500 or err.code in _RETRYABLE_STATUS:
            raise _Retryable(problem) from None
        raise RemoteError(problem) from None
    except (socket.timeout, TimeoutError):
        raise _Retryable(f"no reply within {timeout_s:g}s") from None
    except (urllib.error.URLError, ConnectionError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise _Retryable(f"cannot connect ({reason})") from None
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _Retryable(f"reply is not JSON: {body[:120]!r}") from None


def post_json(
    url: str,
    payload: dict,
    policy: RetryPolicy,
    check: Callable[[Any], Any] = lambda reply: reply,
    api_key: Optional[str] = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """POST `payload` as JSON and return `check(reply)`; `check` raises ValueError on a malformed reply."""
    data = json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            try:
                reply = _post_once(url, data, headers, policy.timeout_s)
                return check(reply)
            except (ValueError, TypeError, KeyError, IndexError) as err:
                raise _Retryable(f"malformed reply: {err}") from None
        except RemoteError as err:
            raise RemoteError(f"{url}: {err}") from None
        except _Retryable as err:
            problem = str(err)
        wait = policy.retry_after(attempt, time.monotonic() - started)
        if wait is None:
            break
        logger.warning("%s: attempt %d failed (%s); retrying in %.2gs", url, attempt + 1, problem, wait)
        sleep(wait)
        attempt += 1
    raise RemoteError(f"{url}: gave up after {attempt + 1} attempts in {time.monotonic() - started:.1f}s; "
                      f"last problem: {problem}")
