"""The checkpoint engine never runs code from a file it loads and keeps weights in safetensors."""
import os
import pickle

import pytest
import torch

from rlhf.training.safe_checkpoint import SafeCheckpointEngine, safe_load, weights_path

RAN = []


class Payload:
    def __reduce__(self):  # what a malicious pickle does: call something on load
        return (RAN.append, ("code ran",))


def test_pickle_payload_is_refused_not_run(tmp_path):
    path = str(tmp_path / "evil.pt")
    with open(path, "wb") as fh:
        pickle.dump({"module": Payload()}, fh)
    with pytest.raises(pickle.UnpicklingError):
        safe_load(path)
    assert RAN == []


def test_module_weights_go_to_safetensors_and_come_back(tmp_path):
    engine = SafeCheckpointEngine()
    shared = torch.arange(6.0).reshape(2, 3)
    state = {"module": {"embed.weight": shared, "lm_head.weight": shared}, "global_steps": 7,
             "param_shapes": [{"embed.weight": torch.Size([2, 3])}]}
    path = str(tmp_path / "mp_rank_00_model_states.pt")
    engine.save(state, path)
    assert os.path.isfile(weights_path(path))
    # The .pt file carries no tensor data of the module any more.
    assert safe_load(path)["module"] is None
    loaded = engine.load(path)
    assert loaded["global_steps"] == 7
    assert torch.equal(loaded["module"]["lm_head.weight"], shared)
    os.remove(weights_path(path))
    with pytest.raises(FileNotFoundError, match="weights file"):
        engine.load(path)
