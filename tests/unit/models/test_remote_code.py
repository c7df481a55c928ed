"""RELIABILITY 12: a model folder cannot run its own code unless model.trust_remote_code is set."""
import json

import pytest

from rlhf.config import load
from rlhf.models.loading import load_causal_lm


def test_remote_code_is_refused_by_default(tmp_path):
    marker = tmp_path / "code_ran"
    (tmp_path / "evil_config.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n"
        "from transformers import LlamaConfig\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
    )
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "evil_config.EvilConfig",
                                           "AutoModelForCausalLM": "evil_config.EvilConfig"},
    }))
    cfg = load(None, [f"model.path={tmp_path}", "data.train_path=/d.jsonl"])
    assert cfg.model.trust_remote_code is False
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_causal_lm(str(tmp_path), cfg.model.dtype, cfg.model.trust_remote_code)
    assert not marker.exists()
