"""Build every local asset (tokenizer, tiny policy and reward models, datasets) into one folder.

Layout of ``out_dir``::

    policy/      LlamaForCausalLM + tokenizer   (policy and reference)
    base/        the same architecture pre-trained for seconds on the corpus (general-ability probes)
    reward/      LlamaForSequenceClassification (num_labels=1) + tokenizer (reward and critic)
    judge/       a smaller LlamaForCausalLM trained to grade letters answers by the packaged rubric
    teacher/     a larger LlamaForCausalLM trained on correct letters answers (the distillation teacher)
    data/        task_*, sft_*, prefs_* JSONL files, general_eval.txt, general_prompts.jsonl
    assets.json  what was built: seed, sizes, parameter counts, relative paths

Both model folders hold the tokenizer, so ``AutoTokenizer.from_pretrained`` and the
``AutoModel*`` classes (and vLLM) load from the same path. A build is a pure
function of its arguments: the same seed gives byte-identical weights and data.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import tokenizers
import transformers

from rlhf.assets.datasets import split_prompts, write_datasets
from rlhf.assets.judge import JUDGE_SPEC, train_judge
from rlhf.assets.models import TinyModelSpec, build_policy, build_reward, count_params
from rlhf.assets.pretrain import pretrain_base
from rlhf.assets.teacher import TEACHER_SPEC, train_teacher
from rlhf.assets.tokenizer import DEFAULT_VOCAB_SIZE, build_tokenizer, read_corpus
from rlhf.rewards.rubric import load_rubric

MANIFEST = "assets.json"


@dataclass(frozen=True)
class AssetPaths:
    """Absolute paths of a built asset folder."""

    root: Path
    policy: Path
    reward: Path
    judge: Path
    teacher: Path
    base: Path
    data: Path
    manifest: Path

    def data_file(self, name: str) -> Path:
        """Path of one file under ``data/``, e.g. ``data_file("sft_train.jsonl")``."""
        return self.data / name

    @classmethod
    def from_dir(cls, out_dir: str | Path) -> AssetPaths:
        """Paths of an asset folder laid out by ``build_assets`` (not checked for existence)."""
        root = Path(out_dir).resolve()
        return cls(root=root, policy=root / "policy", reward=root / "reward", judge=root / "judge",
                   teacher=root / "teacher", base=root / "base", data=root / "data",
                   manifest=root / MANIFEST)


def build_assets(
    out_dir: str | Path,
    seed: int = 0,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    spec: TinyModelSpec = TinyModelSpec(),
    judge: bool = True,
    teacher: bool = True,
    base: bool = True,
) -> AssetPaths:
    """Train the tokenizer, initialise the models, write the datasets; return their paths.

    Existing files of the same names are overwritten. The policy uses ``seed`` and
    the reward model ``seed + 1`` so the two start from different weights.
    """
    start = time.perf_counter()
    paths = AssetPaths.from_dir(out_dir)
    paths.root.mkdir(parents=True, exist_ok=True)

    tok = build_tokenizer(vocab_size)
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id)

    policy = build_policy(spec, seed=seed, **ids)
    policy.save_pretrained(paths.policy)
    tok.save_pretrained(paths.policy)

    reward = build_reward(spec, seed=seed + 1, **ids)
    reward.save_pretrained(paths.reward)
    tok.save_pretrained(paths.reward)

    data_files = write_datasets(paths.data, seed=seed)
    params = {"policy": count_params(policy), "reward": count_params(reward)}

    base_training = None
    if base:  # a starting model with general ability to lose (the forgetting gate): the policy's
        # architecture and seed, trained on the corpus (about 10 CPU-seconds)
        base_model = build_policy(spec, seed=seed, **ids)
        base_training = pretrain_base(base_model, tok, read_corpus(), seed=seed)
        base_model.save_pretrained(paths.base)
        tok.save_pretrained(paths.base)
        params["base"] = count_params(base_model)

    judge_training = None
    if judge:  # trained (about 10 CPU-seconds), on train prompts only, with the rubric LocalJudge reads
        judge_model = build_policy(JUDGE_SPEC, seed=seed + 2, **ids)
        judge_training = train_judge(judge_model, tok, load_rubric(), split_prompts(seed)[0], seed=seed)
        judge_model.save_pretrained(paths.judge)
        tok.save_pretrained(paths.judge)
        params["judge"] = count_params(judge_model)
    teacher_training = None
    if teacher:  # trained (about 4 CPU-seconds) on correct answers to train prompts only
        teacher_model = build_policy(TEACHER_SPEC, seed=seed + 3, **ids)
        teacher_training = train_teacher(teacher_model, tok, split_prompts(seed)[0], seed=seed)
        teacher_model.save_pretrained(paths.teacher)
        tok.save_pretrained(paths.teacher)
        params["teacher"] = count_params(teacher_model)

    manifest = {
        "seed": seed,
        "vocab_size": len(tok),
        "special_tokens": {"pad": tok.pad_token, "bos": tok.bos_token, "eos": tok.eos_token},
        "spec": spec.to_dict(),
        "params": params,
        "judge_training": judge_training,
        "teacher_training": teacher_training,
        "base_training": base_training,
        "paths": {
            "policy": "policy",
            "reward": "reward",
            **({"base": "base"} if base else {}),
            **({"judge": "judge"} if judge else {}),
            **({"teacher": "teacher"} if teacher else {}),
            "data": {name: f"data/{name}" for name in data_files},
        },
        "rows": {name: _count_lines(p) for name, p in data_files.items()},
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        "build_seconds": round(time.perf_counter() - start, 3),
    }
    paths.manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return paths


def load_manifest(out_dir: str | Path) -> dict:
    """The ``assets.json`` of a built folder."""
    return json.loads(AssetPaths.from_dir(out_dir).manifest.read_text(encoding="utf-8"))


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())
