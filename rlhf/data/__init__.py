"""Datasets: reading rows with precise errors, prompts for rollouts."""
