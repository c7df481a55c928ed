"""Distributed RLHF on Ray: see README.md. Importing the package in an actor with RLHF_QUIET=1 set
filters known library noise before DeepSpeed or transformers load (rlhf.quiet)."""
import os as _os

if _os.environ.get("RLHF_QUIET") == "1":
    from rlhf.quiet import install as _install_quiet

    _install_quiet()
