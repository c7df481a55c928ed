"""A tiny byte-level BPE tokenizer trained locally on ``rlhf/assets_data/corpus.txt``.

No model hub is reachable, so the project trains its own tokenizer and wraps it in
``transformers.PreTrainedTokenizerFast``; once saved, ``AutoTokenizer.from_pretrained``
and vLLM load it like any hub tokenizer.

Special tokens (fixed ids, in this order): ``<pad>`` = 0, ``<s>`` (bos) = 1,
``</s>`` (eos) = 2, then the chat markers ``<|system|>``, ``<|user|>``,
``<|assistant|>``, ``<|end|>``.

Chat format (``rlhf/assets_data/chat_template.jinja``), exactly::

    <s><|system|>\\n{system}<|end|>\\n        (optional, first message only)
    <|user|>\\n{user}<|end|>\\n
    <|assistant|>\\n{assistant}</s>
    <|user|>\\n<result>{tool}</result><|end|>\\n      (a `tool` turn: an environment's observation)

with no space or newline anywhere else (a following user turn starts right after
``</s>``). ``add_generation_prompt=True`` appends ``<|assistant|>\\n``, so a
prompt for the model is ``<s><|user|>\\n{user}<|end|>\\n<|assistant|>\\n`` and the
model's answer ends with the eos token, which is what SFT teaches it to emit. The
assistant content plus its ``</s>`` is wrapped in ``{% generation %}``, so
``apply_chat_template(..., return_assistant_tokens_mask=True)`` marks exactly
the tokens a policy is trained on.

The bos token comes from the template only: the tokenizer itself adds no special
tokens, so ``tok(tok.apply_chat_template(m, tokenize=False)).input_ids`` equals
``tok.apply_chat_template(m)`` and vLLM's own tokenization of a rendered prompt
gives the same ids (no double bos). Plain text (``tok("...")``) therefore has no
bos; prepend ``tok.bos_token_id`` yourself where a probe wants one.

``padding_side`` is left at the library default; callers choose it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rlhf.assets.spec import DEFAULT_VOCAB_SIZE

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
SYSTEM_TOKEN = "<|system|>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
END_TOKEN = "<|end|>"
CHAT_MARKERS = (SYSTEM_TOKEN, USER_TOKEN, ASSISTANT_TOKEN, END_TOKEN)
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *CHAT_MARKERS)

# 256 byte symbols plus the special tokens: anything smaller cannot encode every input.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


def corpus_path() -> Path:
    """Path of the packaged tokenizer-training corpus."""
    return Path(str(resources.files("rlhf") / "assets_data" / "corpus.txt"))


def chat_template() -> str:
    """The packaged chat template (see the module docstring for the format)."""
    return (resources.files("rlhf") / "assets_data" / "chat_template.jinja").read_text(encoding="utf-8")


def read_corpus(path: str | Path | None = None) -> list[str]:
    """Non-empty lines of the corpus (the packaged one by default)."""
    text = Path(path or corpus_path()).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def train_bpe(lines: list[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """Train a raw byte-level BPE ``tokenizers.Tokenizer`` on ``lines``.

    Training is deterministic for the same lines and vocab size: the trainer
    breaks count ties by token order, and the byte alphabet is given in full so
    the base vocabulary never depends on which bytes the corpus happens to use.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE}, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    # No prefix space: a bare "b" at the start of a response and the "b" in "a b"
    # should stay distinct tokens ("b" vs "Ġb"), like the corpus's letter runs.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    return tok


def build_tokenizer(
    vocab_size: int = DEFAULT_VOCAB_SIZE, corpus: str | Path | None = None
) -> PreTrainedTokenizerFast:
    """Train the BPE on the corpus and wrap it as a ``PreTrainedTokenizerFast``.

    The result has pad/bos/eos set, the chat markers registered as special tokens
    (so ``skip_special_tokens`` drops them when decoding) and the chat template
    attached. It adds no special tokens when encoding; the template supplies bos.
    """
    raw = train_bpe(read_corpus(corpus), vocab_size)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        extra_special_tokens=list(CHAT_MARKERS),
        add_bos_token=False,
        add_eos_token=False,
        # The vLLM engine and data pipelines cap lengths themselves; this only
        # stops transformers from warning about an unknown maximum.
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = chat_template()
    _check_special_ids(tok)
    return tok


def _check_special_ids(tok: PreTrainedTokenizerFast) -> None:
    # Models are configured with these ids; a silent shift would make eos/pad wrong.
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        got = tok.convert_tokens_to_ids(token)
        if got != expected_id:
            raise RuntimeError(f"special token {token!r} has id {got}, expected {expected_id}")
