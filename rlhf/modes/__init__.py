"""Training modes: each is a `ModeSpec` (rlhf.modes.spec) plus a class holding its step and state;
`rlhf.modes.runtime.Runtime` runs every one of them (placement, supervision, the step loop,
evaluation, checkpoints, summary, shutdown). Imports stay lazy: the config schema reads `spec`.
"""
from __future__ import annotations


def build_runtime(cfg):
    """The runtime for `algorithm.name`; the mode reads its data and tokenizer here, before any actor."""
    from rlhf.modes.runtime import Runtime

    return Runtime(cfg)
