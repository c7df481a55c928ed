"""Algorithms composed from the math core: what PPO does with a scored rollout."""
