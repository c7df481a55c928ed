"""Pipelines: several runs (sft, rm, dpo, ppo/GRPO-family, rlaif, distill) in order, each stage using
earlier stages' outputs (`${sft.final}`), on one Ray, resumable, with the forgetting gate measured
against the pipeline's starting model and a report of every stage.

`spec` (the pipeline file and each stage's config), `checks` (every stage checked before the first
runs), `progress` (skip/resume decisions, the baseline), `report` (report.md, report.png) are pure or
touch files only; `runner` drives Ray and is the command line.
"""
