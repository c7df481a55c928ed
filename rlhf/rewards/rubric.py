"""The judge's rubric: a prompt template and the answers it may give, each worth a score.

A rubric is a YAML file the user edits (the packaged default is `rubrics/letters.yaml`):

    template: |            # {prompt} and {response} are replaced by the texts to judge, {answer} (any
      ...                  #   field of the data row) by that row's value
      ...
    answers:               # answer text -> score
      "0": 0.0
      "9": 1.0

A local judge reads its next-token distribution over the answers (each must be one token
of the judge's tokenizer); an API judge's reply is searched for the first answer that
stands alone (not inside a longer number or word).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

DEFAULT_RUBRIC = Path(__file__).with_name("rubrics") / "letters.yaml"


@dataclass(frozen=True)
class Rubric:
    template: str
    answers: dict[str, float]
    path: str = "<inline>"

    def render(self, prompt: str, response: str, fields: Optional[dict] = None) -> str:
        """The judge's input; `fields` (the data row's other fields) fill their `{name}` slots first."""
        # str.replace, not str.format: prompts and responses may hold braces. The texts go in last so
        # a brace pattern inside a response is never taken for a slot.
        text = self.template
        for name, value in (fields or {}).items():
            if name not in ("prompt", "response"):
                text = text.replace("{" + name + "}", str(value))
        return text.replace("{prompt}", prompt).replace("{response}", response)

    def parse_reply(self, reply: str) -> float:
        """The score of the first answer found in a judge's reply; ValueError if there is none."""
        alternatives = "|".join(re.escape(a) for a in sorted(self.answers, key=len, reverse=True))
        # Standing alone: not inside a word or a longer number ("7" in "17" or "1.75"), but "7." ends a sentence.
        match = re.search(rf"(?<!\w)(?<!\d\.)({alternatives})(?!\w)(?!\.\d)", reply)
        if match is None:
            raise ValueError(f"judge reply {reply[:80]!r} holds none of the rubric's answers "
                             f"({', '.join(self.answers)})")
        return self.answers[match.group(1)]


def load_rubric(path: Optional[str] = None) -> Rubric:
    """Read a rubric file (None: the packaged default), or ValueError naming the file and the problem."""
    path = str(path or DEFAULT_RUBRIC)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except OSError as err:
        raise ValueError(f"rubric {path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ValueError(f"rubric {path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("template"), str):
        raise ValueError(f"rubric {path}: needs a 'template' string and an 'answers' mapping")
    template, answers = raw["template"], raw.get("answers")
    for slot in ("{prompt}", "{response}"):
        if slot not in template:
            raise ValueError(f"rubric {path}: the template has no {slot} slot")
    if not isinstance(answers, dict) or not answers:
        raise ValueError(f"rubric {path}: 'answers' must map each answer text to its score")
    try:
        answers = {str(k): float(v) for k, v in answers.items()}
    except (TypeError, ValueError):
        raise ValueError(f"rubric {path}: every answer's score must be a number") from None
    unknown = set(raw) - {"template", "answers"}
    if unknown:
        raise ValueError(f"rubric {path}: unknown keys {sorted(unknown)} (known: template, answers)")
    return Rubric(template=template, answers=answers, path=path)
