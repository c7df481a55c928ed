"""The driver's cheap reads of a model folder give what transformers' Auto classes give."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import AutoConfig, AutoTokenizer

from rlhf.models.loading import PLAIN_MODEL_TYPES, context_limit, load_tokenizer

TEXTS = ["Write the letter b five times.", "  spaces, UPPER case, digits 0123 and ünïcode ", ""]


@pytest.fixture(scope="module")
def tokenizer():
    from rlhf.assets.tokenizer import build_tokenizer

    return build_tokenizer()


def _folder(tmp_path, tokenizer, model_type: str, **config) -> str:
    folder = tmp_path / model_type
    AutoConfig.for_model(model_type, **config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_plain_model_types_are_not_ones_auto_tokenizer_remaps():
    from transformers.models.auto.tokenization_auto import MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS

    assert not PLAIN_MODEL_TYPES & set(MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS)


@pytest.mark.parametrize("model_type", sorted(PLAIN_MODEL_TYPES))
def test_tokenizer_equals_auto_tokenizer(model_type, tokenizer, tmp_path):
    folder = _folder(tmp_path, tokenizer, model_type)
    ours, auto = load_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
    assert type(ours) is type(auto)
    assert ours.get_vocab() == auto.get_vocab() and ours.all_special_tokens == auto.all_special_tokens
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (auto.bos_token_id, auto.eos_token_id,
                                                                         auto.pad_token_id)
    assert ours.chat_template == auto.chat_template
    for text in TEXTS:
        assert ours(text).input_ids == auto(text).input_ids
    chat = [{"role": "user", "content": TEXTS[0]}]
    assert (ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            == auto.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "phi3", "gpt2", "gpt_neox"])
def test_context_limit_equals_the_config_class(model_type, tokenizer, tmp_path):
    # GPT-2 saves it as n_positions: read through AutoConfig's attribute map.
    key = "n_positions" if model_type == "gpt2" else "max_position_embeddings"
    folder = _folder(tmp_path, tokenizer, model_type, **{key: 77})
    assert context_limit(folder) == AutoConfig.from_pretrained(folder).max_position_embeddings == 77


def test_a_remapped_or_remote_folder_goes_through_auto_tokenizer(tokenizer, tmp_path):
    from rlhf.models import loading

    folder = _folder(tmp_path, tokenizer, "llama")
    assert loading._plain_tokenizer(folder)
    config = json.loads((tmp_path / "llama" / "config.json").read_text())
    for edit in ({"model_type": "deepseek_v3"}, {"auto_map": {"AutoConfig": "x.Y"}}):
        (tmp_path / "llama" / "config.json").write_text(json.dumps({**config, **edit}))
        assert not loading._plain_tokenizer(folder)


def test_reading_a_runs_data_imports_no_compiler_or_auto_model_code(tokenizer, tmp_path):
    """The driver tokenizes the data before any actor starts: torch._dynamo and the auto-model machinery
    (seconds of CPU in a fresh process) stay out of it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = tmp_path / "model"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "Write the letter b."}\n{"prompt": "Say the letter c twice."}\n')
    code = ("import sys\nfrom rlhf.config import load\nfrom rlhf.modes import build_runtime\n"
            f"build_runtime(load(None, ['model.path={model}', 'data.train_path={data}', "
            f"'trainer.output_dir={tmp_path / 'out'}', 'reward.function=rlhf.tasks:letter_reward']))\n"
            "print([m for m in ('torch._dynamo', 'transformers.models.auto.auto_factory') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


@pytest.mark.parametrize("model_type", ["qwen2", "phi3"])
def test_model_types_auto_tokenizer_remaps_keep_its_class(model_type, tokenizer, tmp_path):
    # transformers gives these their own tokenizer class even when the folder names the generic one.
    folder = _folder(tmp_path, tokenizer, model_type)
    assert type(load_tokenizer(folder)) is type(AutoTokenizer.from_pretrained(folder))
