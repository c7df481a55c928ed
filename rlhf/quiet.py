"""Library noise kept off the console unless `logging.verbose: true`.

Every actor used to print the same lines: DeepSpeed's "Setting accelerator to CPU" and op-build
notices, transformers' load report for the value head a critic or reward model initialises on
purpose (`score.weight` MISSING, the causal LM's `lm_head.weight` UNEXPECTED), known
FutureWarnings from torch.distributed, and a weight-loading progress bar per actor. `install()`
filters exactly those; any other warning still shows. Actors get it through their environment
(`RLHF_QUIET=1`, read when `rlhf` is imported, before DeepSpeed is), the driver by a call.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import warnings

QUIET_ENV = "RLHF_QUIET"

DEEPSPEED_NOISE = re.compile(r"Setting (ds_)?accelerator to|built successfully|Using .* as the extension root")
"""DeepSpeed lines that say nothing a user can act on (accelerator detection, op builds)."""

KNOWN_FUTURE_WARNINGS = (r".*all_gather_into_tensor", r".*_all_gather_base", r".*reduce_scatter_tensor",
                         r".*torch\.cpu\.amp\.autocast", r".*TRANSFORMERS_CACHE")
"""FutureWarnings from libraries we pin, about calls they (not we) make."""

HEADS_INITIALISED_ON_PURPOSE = {("score", "MISSING"), ("lm_head", "UNEXPECTED")}
"""A value model made from a causal LM: a fresh scalar head, the LM head left out."""

_TABLE_ROW = re.compile(r"^\s*([\w.]+)\s*\|\s*([A-Z]+)\s*\|")


def expected_load_report(message: str) -> bool:
    """True for a transformers LOAD REPORT listing only heads we initialise on purpose."""
    if "LOAD REPORT" not in message:
        return False
    rows = [m.groups() for m in map(_TABLE_ROW.match, message.splitlines()) if m and m.group(2) != "STATUS"]
    return bool(rows) and all((key.split(".")[0], status) in HEADS_INITIALISED_ON_PURPOSE for key, status in rows)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (DEEPSPEED_NOISE.search(message) or expected_load_report(message))


def install() -> None:
    """Filter the known noise in this process (idempotent)."""
    noise = _DropNoise()
    for name in ("DeepSpeed", "transformers", "transformers.modeling_utils", "transformers.utils.loading_report"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(noise)
    for pattern in KNOWN_FUTURE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-actor weight-loading bars
    if "transformers" in sys.modules or "huggingface_hub" in sys.modules:  # they read the variable at import
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def actor_env(verbose: bool) -> dict[str, str]:
    """Environment variables that make an actor process install the filters at import."""
    return {} if verbose else {QUIET_ENV: "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
