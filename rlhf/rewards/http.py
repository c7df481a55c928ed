"""A remote reward server as the reward: batched POSTs of the texts, scores back.

Protocol (what `python -m rlhf.rewards.server` speaks): POST `reward.http.url` with
`{"prompts": [...], "responses": [...], "columns": {"answer": [...], ...}}` (the data rows'
other fields, one value per response), reply `{"scores": [...]}`, one number per
response, in order. A reply with a wrong count or non-numbers counts as a failed
attempt (retried, then an error naming the URL), never as zeros.
"""
from __future__ import annotations

import torch

from rlhf.rewards.base import check_scores
from rlhf.rewards.remote import RetryPolicy, post_json, read_api_key


def scores_from_reply(reply, expected: int, url: str) -> torch.Tensor:
    """The `scores` of a reward-server reply as a float tensor, or ValueError saying what is wrong."""
    if not isinstance(reply, dict) or "scores" not in reply:
        raise ValueError(f"expected a JSON object with 'scores', got {str(reply)[:120]}")
    return check_scores(reply["scores"], expected, f"http:{url}")


class HttpReward:
    def __init__(self, url: str, policy: RetryPolicy, batch_size: int = 64, api_key_env: str | None = None) -> None:
        self.name = f"http:{url}"
        self.url = url
        self.policy = policy
        self.batch_size = batch_size
        self._api_key = read_api_key(api_key_env, "reward.http.api_key_env")

    def __repr__(self) -> str:  # never show the key
        return f"HttpReward({self.url!r})"

    def score(self, prompts, responses, sequences=None, attention_mask=None, columns=None) -> torch.Tensor:
        parts = []
        for start in range(0, len(responses), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            payload = {"prompts": list(prompts[chunk]), "responses": list(responses[chunk]),
                       "columns": {name: list(values[chunk]) for name, values in (columns or {}).items()}}
            expected = len(payload["responses"])
            parts.append(post_json(self.url, payload, self.policy,
                                   check=lambda reply, n=expected: scores_from_reply(reply, n, self.url),
                                   api_key=self._api_key))
        return torch.cat(parts) if parts else torch.zeros(0)
