"""Ray actor groups: thin shells that hold models and engines and call into `rlhf`.

"Actor" here always means a Ray actor; the trained model is the policy.
"""
