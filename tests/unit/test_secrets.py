import logging

import pytest

from rlhf.secrets import RedactSecrets, api_key_from_env, redact, secret_values


def test_api_key_only_from_environment(monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", "sk-live-1234567890")
    assert api_key_from_env("JUDGE_API_KEY", "reward.judge") == "sk-live-1234567890"
    monkeypatch.delenv("JUDGE_API_KEY")
    with pytest.raises(ValueError, match="reward.judge: environment variable JUDGE_API_KEY is not set"):
        api_key_from_env("JUDGE_API_KEY", "reward.judge")


def test_secret_values_by_variable_name():
    env = {"WANDB_API_KEY": "abcdefgh1234", "HF_TOKEN": "hf_xxxxxxxx", "HOME": "/home/someone",
           "DB_PASSWORD": "short"}  # under 8 characters: too short to redact safely
    assert secret_values(env) == ["abcdefgh1234", "hf_xxxxxxxx"]
    assert redact("key=abcdefgh1234 token hf_xxxxxxxx", secret_values(env)) == "key=*** token ***"


def test_log_records_are_redacted(monkeypatch, caplog):
    monkeypatch.setenv("RLHF_TEST_API_KEY", "planted-secret-value-42")
    log = logging.getLogger("rlhf.test_secrets")
    caplog.handler.addFilter(RedactSecrets())
    log.warning("request failed with header Authorization: Bearer %s", "planted-secret-value-42")
    assert "planted-secret-value-42" not in caplog.text
    assert "Bearer ***" in caplog.text
