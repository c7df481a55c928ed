"""Build the tiny assets once, then load them back the way the rest of the project does:
``AutoTokenizer`` / ``AutoModelFor*`` and a real vLLM engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from dependencies import require
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhf.assets import AssetPaths, TinyModelSpec, build_assets, load_manifest
from rlhf.assets.datasets import DATA_FILES, read_jsonl
from rlhf.assets.tokenizer import read_corpus
from rlhf.tasks import letter_reward, parse_target_letter

REPO = Path(__file__).resolve().parents[2]
USER_MSG = "Write the letter b five times."


@pytest.fixture(scope="module")
def assets(tiny_assets: AssetPaths) -> AssetPaths:
    """The session's build (`build_assets(..., seed=0)`, conftest.py): read here, never written."""
    return tiny_assets


def test_layout_and_manifest(assets: AssetPaths) -> None:
    for d in (assets.policy, assets.reward):
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            assert (d / name).is_file(), d / name
    for name in DATA_FILES:
        assert assets.data_file(name).is_file(), name
    m = load_manifest(assets.root)
    assert m["seed"] == 0 and m["vocab_size"] == 512
    assert m["spec"]["head_dim"] == 32
    assert 400_000 < m["params"]["policy"] < 2_000_000
    assert (assets.root / m["paths"]["policy"]).resolve() == assets.policy
    assert all((assets.root / p).is_file() for p in m["paths"]["data"].values())


def test_datasets(assets: AssetPaths) -> None:
    task_train = read_jsonl(assets.data_file("task_train.jsonl"))
    task_eval = read_jsonl(assets.data_file("task_eval.jsonl"))
    assert len(task_train) >= 300 and 40 <= len(task_eval) <= 60
    train_prompts = {r["prompt"] for r in task_train}
    eval_prompts = {r["prompt"] for r in task_eval}
    assert not train_prompts & eval_prompts
    for split, prompts in (("train", train_prompts), ("eval", eval_prompts)):
        sft = read_jsonl(assets.data_file(f"sft_{split}.jsonl"))
        prefs = read_jsonl(assets.data_file(f"prefs_{split}.jsonl"))
        assert {r["prompt"] for r in sft} == prompts == {r["prompt"] for r in prefs}
        assert set(sft[0]) == {"prompt", "response"} and set(prefs[0]) == {"prompt", "chosen", "rejected"}
        ps = [r["prompt"] for r in sft]
        assert letter_reward(ps, [r["response"] for r in sft]) == [1.0] * len(sft)
        chosen = letter_reward([r["prompt"] for r in prefs], [r["chosen"] for r in prefs])
        rejected = letter_reward([r["prompt"] for r in prefs], [r["rejected"] for r in prefs])
        assert all(c > r for c, r in zip(chosen, rejected))
    # Every target letter shows up in eval, so eval reward covers the whole task.
    assert len({parse_target_letter(p) for p in eval_prompts}) == 6

    general = assets.data_file("general_eval.txt").read_text(encoding="utf-8").splitlines()
    assert len(general) >= 30
    assert not set(general) & set(read_corpus())


def test_tokenizer_and_chat_template(assets: AssetPaths) -> None:
    tok = AutoTokenizer.from_pretrained(assets.policy)
    assert len(tok) == 512
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)

    msgs = [{"role": "user", "content": USER_MSG}]
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert prompt == f"<s><|user|>\n{USER_MSG}<|end|>\n<|assistant|>\n"
    no_gen = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    assert no_gen == f"<s><|user|>\n{USER_MSG}<|end|>\n"
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "b b b"}], tokenize=False)
    assert full == prompt + "b b b</s>"
    system = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *msgs], tokenize=False)
    assert system.startswith("<s><|system|>\nBe brief.<|end|>\n<|user|>\n")

    # One bos, from the template only: rendering then encoding equals encoding in one go.
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids == tok(prompt).input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok("plain text").input_ids[0] != tok.bos_token_id
    # Chat markers are single special tokens and vanish with skip_special_tokens.
    assert tok.decode(tok(full).input_ids, skip_special_tokens=True) == f"\n{USER_MSG}\n\nb b b"
    assert tok.decode(tok("a b c aaaa 1 2 3").input_ids) == "a b c aaaa 1 2 3"

    # The assistant mask covers exactly the answer and its eos.
    out = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "b b b"}],
                                  return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert masked == tok("b b b").input_ids + [tok.eos_token_id]

    # The reward model folder carries the same tokenizer.
    assert AutoTokenizer.from_pretrained(assets.reward)(prompt).input_ids == ids


def test_policy_loads_and_generates(assets: AssetPaths) -> None:
    tok = AutoTokenizer.from_pretrained(assets.policy)
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.dtype == torch.float32
    assert model.generation_config.eos_token_id == tok.eos_token_id
    ids = tok.apply_chat_template([{"role": "user", "content": USER_MSG}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = model(**ids).logits
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert logits.shape == (1, ids["input_ids"].shape[1], 512)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 5


def test_reward_model_one_scalar_per_sequence_any_padding(assets: AssetPaths) -> None:
    tok = AutoTokenizer.from_pretrained(assets.reward)
    model = AutoModelForSequenceClassification.from_pretrained(assets.reward).eval()
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    texts = [
        tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False)
        for p, r in [(USER_MSG, "b b b b b"), ("Repeat the letter k.", "k"), ("Say the letter s two times.", "x y z q")]
    ]
    with torch.no_grad():
        alone = torch.stack([model(**tok(t, return_tensors="pt")).logits[0, 0] for t in texts])
        for side in ("right", "left"):
            tok.padding_side = side
            batch = tok(texts, return_tensors="pt", padding=True)
            assert (batch["input_ids"] == tok.pad_token_id).any(), "lengths should differ"
            scores = model(**batch).logits
            assert scores.shape == (3, 1)
            # RoPE only sees relative positions, so left padding changes nothing but rounding.
            torch.testing.assert_close(scores[:, 0], alone, atol=1e-4, rtol=1e-4)
    assert len(set(alone.tolist())) == 3


def _file_bytes(root: Path) -> dict[str, bytes]:
    names = ["policy/model.safetensors", "reward/model.safetensors", "judge/model.safetensors",
             "teacher/model.safetensors", "policy/tokenizer.json",
             "policy/config.json", "reward/config.json", *(f"data/{n}" for n in DATA_FILES)]
    return {n: (root / n).read_bytes() for n in names}


def test_deterministic_build_across_processes(assets: AssetPaths, tmp_path: Path) -> None:
    # A second build in a fresh interpreter (new hash seed, new RNG state), through the CLI.
    out = tmp_path / "again"
    proc = subprocess.run([sys.executable, "-m", "rlhf.assets.cli", "--out", str(out), "--seed", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "policy" in proc.stdout and "524,928" in proc.stdout
    assert _file_bytes(out) == _file_bytes(assets.root)

    other = build_assets(tmp_path / "seed1", seed=1, spec=TinyModelSpec(), judge=False, teacher=False, base=False)
    assert other.policy.joinpath("model.safetensors").read_bytes() != assets.policy.joinpath("model.safetensors").read_bytes()
    # The tokenizer does not depend on the seed, only the weights and data order do.
    assert other.policy.joinpath("tokenizer.json").read_bytes() == assets.policy.joinpath("tokenizer.json").read_bytes()


VLLM_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    if __name__ == "__main__":  # vLLM spawns its engine process; it must not rerun this
        t0 = time.perf_counter()
        from vllm import LLM, SamplingParams
        llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=128, enforce_eager=True, seed=0,
                  # On CPU gpu_memory_utilization is a share of the NUMA node's memory minus
                  # the worker's own footprint; a fixed KV size is the robust choice.
                  kv_cache_memory_bytes=32 << 20)
        t1 = time.perf_counter()
        prompts = [json.loads(p) for p in sys.argv[2:]]
        outs = llm.generate(prompts, SamplingParams(max_tokens=6, temperature=0.0, logprobs=0), use_tqdm=False)
        res = [{"prompt_token_ids": list(o.prompt_token_ids), "token_ids": list(o.outputs[0].token_ids),
                "logprobs": [lp[t].logprob for t, lp in zip(o.outputs[0].token_ids, o.outputs[0].logprobs)]}
               for o in outs]
        print("RESULT " + json.dumps({"startup_s": t1 - t0, "generate_s": time.perf_counter() - t1, "outputs": res}),
              flush=True)
    """
)


@pytest.mark.slow
def test_policy_serves_in_vllm(assets: AssetPaths) -> None:
    require("vllm")
    tok = AutoTokenizer.from_pretrained(assets.policy)
    users = [USER_MSG, "Repeat the letter k.", "Say the letter s again and again."]
    prompts = [tok.apply_chat_template([{"role": "user", "content": u}], tokenize=False, add_generation_prompt=True)
               for u in users]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", VLLM_SCRIPT, str(assets.policy), *map(json.dumps, prompts)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-2000:], proc.stderr[-4000:])
    result = json.loads(lines[-1][len("RESULT "):])
    print(f"vLLM start-up {result['startup_s']:.1f}s, generate {result['generate_s']:.1f}s")

    model = AutoModelForCausalLM.from_pretrained(assets.policy).eval()
    for prompt, out in zip(prompts, result["outputs"]):
        # vLLM tokenizes the rendered prompt to exactly the ids HF does: one bos, same markers.
        assert out["prompt_token_ids"] == tok(prompt).input_ids
        assert 1 <= len(out["token_ids"]) <= 6
        # Its logprobs of its greedy tokens are the HF model's logprobs of those tokens.
        ids = torch.tensor([out["prompt_token_ids"] + out["token_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        n = len(out["prompt_token_ids"])
        hf = [logp[n - 1 + i, t].item() for i, t in enumerate(out["token_ids"])]
        assert out["token_ids"][0] == int(logp[n - 1].argmax())
        assert hf == pytest.approx(out["logprobs"], abs=1e-3)
