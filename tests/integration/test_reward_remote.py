"""Remote reward sources against real servers (RELIABILITY.md test 9), and the judges on the tiny judge.

Down, slow, wrong count, non-numbers: bounded retries with backoff, then an error naming
the URL within the computed bound; a server that comes back inside the retry window is
used; no score is ever made up. No Ray here: these are the sources the reward actor hosts.
"""
from __future__ import annotations

import random
import threading
import time

import pytest
import torch
from reward_servers import FaultyServer, free_port, start_reward_server, stop

from rlhf.assets.datasets import split_prompts
from rlhf.assets.judge import sample_response
from rlhf.rewards.http import HttpReward
from rlhf.rewards.judge import ApiJudge, LocalJudge, judge_input_ids, left_pad
from rlhf.rewards.remote import RemoteError, RetryPolicy
from rlhf.rewards.rubric import load_rubric
from rlhf.tasks import letter_reward

pytestmark = pytest.mark.slow

FAST = RetryPolicy(timeout_s=0.5, max_retries=2, backoff_s=0.1)  # waits 0.1 + 0.2; worst case 1.8 s
PROMPTS = ["Write the letter b five times.", "Repeat the letter k."]
RESPONSES = ["b b b", "kx"]


def _ok(body, n):
    return 200, {"scores": letter_reward(body["prompts"], body["responses"])}, 0.0


def test_shipped_server_scores_batches_and_checks_the_key(monkeypatch):
    port = free_port()
    monkeypatch.setenv("RLHF_TEST_REWARD_KEY", "s3cret-token")
    proc = start_reward_server(port, api_key_env="RLHF_TEST_REWARD_KEY")
    url = f"http://127.0.0.1:{port}/score"
    try:
        source = HttpReward(url, FAST, batch_size=1, api_key_env="RLHF_TEST_REWARD_KEY")
        assert source.score(PROMPTS, RESPONSES).tolist() == [1.0, 0.5]  # two POSTs of one
        assert "s3cret" not in repr(source) and "s3cret" not in source.name
        monkeypatch.setenv("RLHF_TEST_REWARD_KEY", "not-the-Key-42")
        with pytest.raises(RemoteError) as err:  # not retried (counted at a server: test_client_errors_...)
            HttpReward(url, FAST, api_key_env="RLHF_TEST_REWARD_KEY").score(PROMPTS, RESPONSES)
        assert str(err.value).startswith(url) and "HTTP 401" in str(err.value) and "Key-42" not in str(err.value)
        monkeypatch.delenv("RLHF_TEST_REWARD_KEY")
        with pytest.raises(RemoteError, match="environment variable RLHF_TEST_REWARD_KEY is not set"):
            HttpReward(url, FAST, api_key_env="RLHF_TEST_REWARD_KEY")
    finally:
        stop(proc)


@pytest.mark.parametrize("fault, problem", [
    ("down", "cannot connect"),
    ("slow", "no reply within 0.5s"),
    ("wrong_count", "returned 1 scores for 2 responses"),
    ("non_numbers", "returned non-numbers"),
    ("not_json_object", "expected a JSON object with 'scores'"),
    ("server_error", "HTTP 500"),
])
def test_faults_retry_with_backoff_then_fail_naming_the_url(fault, problem):
    replies = {
        "slow": lambda b, n: (*_ok(b, n)[:2], 1.0),
        "wrong_count": lambda b, n: (200, {"scores": [1.0]}, 0.0),
        "non_numbers": lambda b, n: (200, {"scores": ["high", None]}, 0.0),
        "not_json_object": lambda b, n: (200, [1.0, 0.5], 0.0),
        "server_error": lambda b, n: (500, {"error": "boom"}, 0.0),
    }
    server = None if fault == "down" else FaultyServer(replies[fault])
    url = server.url if server else f"http://127.0.0.1:{free_port()}/score"
    try:
        started = time.monotonic()
        with pytest.raises(RemoteError) as err:
            HttpReward(url, FAST).score(PROMPTS, RESPONSES)
        elapsed = time.monotonic() - started
        message = str(err.value)
        assert message.startswith(f"{url}: gave up after 3 attempts") and problem in message, message
        assert 0.3 <= elapsed <= FAST.worst_case_s() + 1.0, elapsed  # the backoff waits happened; bounded
        if server:
            assert server.requests == 3
    finally:
        if server:
            server.close()


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_client_errors_are_sent_once_counted_at_the_server(status):
    """A 4xx says the request itself is wrong: retrying cannot fix it, so exactly one request
    reaches the server (counted there, not inferred from elapsed time)."""
    server = FaultyServer(lambda b, n: (status, {"error": "refused"}, 0.0))
    try:
        with pytest.raises(RemoteError) as err:
            HttpReward(server.url, FAST).score(PROMPTS, RESPONSES)
        assert f"HTTP {status}" in str(err.value)
        assert server.requests == 1, server.requests
    finally:
        server.close()


def test_recovers_when_the_server_returns_within_the_retry_window():
    # Fails twice (HTTP 503), then answers: the third attempt, 0.1 + 0.2 s later, gets real scores.
    server = FaultyServer(lambda b, n: (503, {"error": "warming up"}, 0.0) if n <= 2 else _ok(b, n))
    try:
        assert HttpReward(server.url, FAST).score(PROMPTS, RESPONSES).tolist() == [1.0, 0.5]
        assert server.requests == 3
    finally:
        server.close()
    # Down at first, listening 0.5 s later: the retries (0.3, 0.6, 1.2 s apart) find it.
    port = free_port()
    later = {}
    threading.Timer(0.5, lambda: later.setdefault("server", FaultyServer(_ok, port=port))).start()
    try:
        policy = RetryPolicy(timeout_s=1.0, max_retries=3, backoff_s=0.3)
        scores = HttpReward(f"http://127.0.0.1:{port}/score", policy).score(PROMPTS, RESPONSES)
        assert scores.tolist() == [1.0, 0.5]
    finally:
        time.sleep(0.6)
        later["server"].close()


# ---------------------------------------------------------------- judges on the tiny judge model

def _held_out_answers(n: int, tokenizer):
    _, eval_prompts = split_prompts(0)
    rng = random.Random(11)
    special = set(tokenizer.all_special_ids)
    vocab = [tokenizer.decode([i]) for i in range(len(tokenizer)) if i not in special]
    prompts = [rng.choice(eval_prompts) for _ in range(n)]
    return prompts, [sample_response(p, rng, vocab) for p in prompts]


def test_local_judge_agrees_with_the_letters_reward(tiny_assets):
    judge = LocalJudge(str(tiny_assets.judge), load_rubric(), micro_batch_size=64)
    prompts, responses = _held_out_answers(200, judge.tokenizer)
    chat = [judge.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                add_generation_prompt=True) for p in prompts]
    truth = torch.tensor(letter_reward(prompts, responses))
    for shown in (prompts, chat):  # raw prompts (RLAIF) and chat-formatted ones (what PPO passes)
        scores = judge.score(shown, responses)
        assert scores.shape == (200,) and bool(((scores >= 0) & (scores <= 1)).all())
        corr = float(torch.corrcoef(torch.stack([scores, truth]))[0, 1])
        assert corr > 0.5, corr  # about 0.7 for the shipped build; a random judge sits near 0
    # Micro-batching and padding do not change a score.
    alone = torch.cat([judge.score(chat[i:i + 1], responses[i:i + 1]) for i in range(5)])
    assert torch.allclose(alone, judge.score(chat[:5], responses[:5]), atol=1e-5)


def _chat_server_backed_by(judge: LocalJudge, answer_text=None) -> FaultyServer:
    """An OpenAI-compatible chat-completions endpoint whose 'LLM' is the tiny judge, greedy."""
    def respond(body, n):
        text = body["messages"][-1]["content"]
        ids, mask = left_pad([judge_input_ids(judge.tokenizer, text)], judge.pad_id)
        with torch.no_grad():
            logits = judge.model(input_ids=ids, attention_mask=mask).logits[0, -1]
        best = list(judge.rubric.answers)[int(logits[judge.answer_ids].argmax())]
        content = answer_text if answer_text is not None else f"Score: {best}"
        return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}, 0.0
    return FaultyServer(respond)


def test_api_judge_parses_replies_and_refuses_replies_without_a_score(tiny_assets):
    local = LocalJudge(str(tiny_assets.judge), load_rubric())
    prompts, responses = _held_out_answers(12, local.tokenizer)
    server = _chat_server_backed_by(local)
    base_url = server.url.rsplit("/", 1)[0] + "/v1"
    try:
        api = ApiJudge(base_url, "tiny-judge", load_rubric(), FAST, concurrency=3)
        scores = api.score(prompts, responses)
        # Greedy digit of the same model == the answer with the highest probability in the local judge.
        rows = [judge_input_ids(local.tokenizer, local.rubric.render(p, r)) for p, r in zip(prompts, responses)]
        ids, mask = left_pad(rows, local.pad_id)
        from rlhf.models.forward import causal_lm_logits

        with torch.no_grad():
            best = causal_lm_logits(local.model, ids, mask)[:, -1][:, local.answer_ids].argmax(-1)
        assert scores.tolist() == pytest.approx(local.values[best].tolist())
    finally:
        server.close()
    chatty = _chat_server_backed_by(local, answer_text="I cannot grade this.")
    try:
        with pytest.raises(RemoteError) as err:
            ApiJudge(chatty.url.rsplit("/", 1)[0], "tiny-judge", load_rubric(), FAST).score(prompts[:1], responses[:1])
        assert str(err.value).startswith(chatty.url.rsplit("/", 1)[0] + "/chat/completions: gave up after 3")
        assert "holds none of the rubric's answers" in str(err.value)
    finally:
        chatty.close()
