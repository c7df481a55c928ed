"""API keys: read from environment variables only, and kept out of every log line.

A key never belongs in a config file (it is copied to output_dir/config.yaml and W&B) or in
a job's entrypoint or `runtime_env` (the Jobs API shows both to anyone who can list jobs).
Configs name the environment variable; `api_key_from_env` reads it where it is used.
`RedactSecrets` is a logging filter that replaces the value of any such variable in a log
record, as a second line of defence against an exception message that quotes a header.
"""
from __future__ import annotations

import logging
import os
import re

# Variable names whose values are treated as secrets.
SECRET_NAME = re.compile(r"(API_KEY|_TOKEN|SECRET|PASSWORD)", re.IGNORECASE)
REDACTED = "***"


def api_key_from_env(variable: str, what: str) -> str:
    """The value of `variable`, or a clear error saying which config needs it."""
    value = os.environ.get(variable, "")
    if not value:
        raise ValueError(f"{what}: environment variable {variable} is not set (API keys are read from the "
                         f"environment only, never from configs)")
    return value


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of the secret-named variables, longest first (so a key containing another is fully hidden)."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message with every secret value replaced by ***."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = secret_values()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = redact(message, self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def install_redaction() -> None:
    """Attach the filter to every handler of the root logger (call after logging is configured)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
