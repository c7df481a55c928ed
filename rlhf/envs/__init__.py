"""Environments for multi-turn rollouts: the interface (base), the tool-using environment (tools)
and the sandbox its `python` tool runs in."""
