"""Evaluation and the forgetting gate: the target-task metric on the held-out split, a
general-ability probe (perplexity on held-out general text, general prompts checked by a
function), each compared with the starting model; the gate warns or stops the run when the
general ability drops more than `eval.max_general_drop`.

Pure math lives in `scores` (perplexity, changes, gate decision) and `leakage` (row hashing);
`probe` holds the model-side loops the policy actors run; `tracker` follows a run's eval points.
"""
