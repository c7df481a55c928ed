import math

import pytest
import torch

from rlhf.faults import BadStepCounter, TooManyBadSteps, dead_role_message, nonfinite_names


def test_nonfinite_names_ignores_masked_positions():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([[0.5, -0.5, math.nan], [1.0, math.inf, 0.0]])  # bad values only under padding
    ret = torch.tensor([[0.0, math.nan, 0.0], [0.0, 0.0, 0.0]])  # NaN on a real token
    assert nonfinite_names({"advantages": adv, "returns": ret, "values": None}, mask) == ["returns"]
    assert nonfinite_names({"advantages": adv}) == ["advantages"]  # no mask: everywhere counts


def test_bad_step_counter_resets_on_a_good_step_and_stops_at_the_limit():
    counter = BadStepCounter(limit=2)
    counter.update(1, ["advantages"], None)
    counter.update(2, [], "/ck/step_2")  # a good step resets the run of bad ones
    counter.update(3, ["policy/skipped_optimizer_steps"], "/ck/step_2")
    assert (counter.in_a_row, counter.total) == (1, 2)
    with pytest.raises(TooManyBadSteps) as err:
        counter.update(4, ["policy/loss"], "/ck/step_2")
    message = str(err.value)
    assert "step 4" in message and "max_bad_steps=2" in message and "/ck/step_2" in message
    restored = BadStepCounter(limit=2)
    restored.load_state_dict(counter.state_dict())
    assert restored.state_dict() == {"in_a_row": 2, "total": 3}


def test_dead_role_message_names_role_phase_and_checkpoint():
    msg = dead_role_message("policy", 1, "train", "/out/checkpoints/step_4")
    assert msg.startswith("policy replica 1 died during train") and "--resume" in msg and "step_4" in msg
    assert "none yet" in dead_role_message("critic", 0, "experience", None)
