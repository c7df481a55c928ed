"""The benchmark's settings mapping and table: one source of truth for both sides, ratios computed right."""
from __future__ import annotations

import yaml
import pytest

from bench.report import comparison_table
from bench.settings import SHAPES, make_settings, ours_config
from rlhf.config import load


@pytest.mark.parametrize("algo,size", sorted(SHAPES))
def test_ours_config_is_a_valid_run_of_the_same_shape(algo, size, tmp_path):
    s = make_settings(algo, size, "bf16", 5, "/assets", str(tmp_path))
    assert s.mini_batch_size == s.prompts_per_step * s.samples_per_prompt  # one mini-batch per step (see SHAPES)
    assert s.mini_batch_size % s.micro_batch_size == 0
    path = tmp_path / "ours.yaml"
    path.write_text(yaml.safe_dump(ours_config(s, str(tmp_path / "out"), cpus=2)))
    cfg = load(path)
    assert cfg.model.path == "/assets/policy" and cfg.model.dtype == "bfloat16"
    assert cfg.trainer.steps == 5 and cfg.trainer.learning_rate == s.learning_rate
    if algo == "dpo":  # pairs per optimizer step, responses up to the same length as TRL's
        assert cfg.algorithm.name == "dpo" and cfg.algorithm.dpo.beta == s.dpo_beta
        assert cfg.trainer.mini_batch_size == s.mini_batch_size and cfg.data.max_response_tokens == s.max_new_tokens
        return
    assert cfg.trainer.prompts_per_step * cfg.rollout.samples_per_prompt == s.samples_per_step
    assert cfg.rollout.max_new_tokens == s.max_new_tokens and cfg.rollout.engine == "builtin"
    assert cfg.algorithm.kl.controller == "fixed" and cfg.algorithm.kl.init_coef == s.kl_coef
    assert cfg.algorithm.uses_critic == (algo == "ppo")
    # PPO's two trainers update at once: each gets half the cores; other groups run one phase at a time
    assert cfg.ray.policy.num_cpus == (1 if algo == "ppo" else 2) and cfg.ray.rollout.num_cpus == 2


def test_small_rows_generate_128_tokens():
    assert all(shape["max_new_tokens"] == 128 for (algo, size), shape in SHAPES.items() if size == "small")


def _side(samples_per_s: float, rss_gb: float) -> dict:
    return {"samples_per_s": samples_per_s, "tokens_per_s": samples_per_s * 10, "step_s": 64 / samples_per_s,
            "wall_s": 100.0, "rss_gb": rss_gb, "pss_gb": rss_gb / 2, "processes": 3, "reward_start": 0.1,
            "reward_end": 0.4}


def test_table_reports_ratio_of_ours_to_trl():
    table = comparison_table("grpo tiny fp32", 64, _side(30.0, 3.0), _side(20.0, 1.0))
    assert "**1.50×**" in table and "| 3.00× |" in table


def test_table_row_says_why_a_side_is_missing():
    table = comparison_table("dpo tiny fp32", 32, {"error": "not available in this checkout"}, _side(20.0, 1.0))
    assert "| ours | not available in this checkout |" in table and "ours / TRL" not in table


@pytest.mark.parametrize("mode", ["off", "blocks", "trainer"])
def test_trl_compile_reaches_the_trl_side(mode):
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.trl_common import compile_models

    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    extra = compile_models({"trl_compile": mode}, model)
    assert extra == ({"torch_compile": True} if mode == "trainer" else {})
    # nn.Module.compile wraps the call lazily: blocks marked here compile at their first forward.
    marked = [layer._compiled_call_impl is not None for layer in model.model.layers]
    assert marked == [mode == "blocks"] * 2
    assert make_settings("grpo", "tiny", "fp32", 1, "/a", "/w").to_json()["trl_compile"] == "off"
