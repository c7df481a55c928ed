import os

import pytest

from rlhf.checkpoint import CheckpointError, CheckpointManager, verify


def _write(manager, step, payload=b"weights"):
    staging = manager.staging(step)
    os.makedirs(os.path.join(staging, "policy"))
    with open(os.path.join(staging, "policy", "model.bin"), "wb") as fh:
        fh.write(payload * 100)
    manager.save_trainer_state(staging, {"step": step})
    return manager.commit(step, staging)


def test_commit_keeps_last_k_and_verifies(tmp_path):
    manager = CheckpointManager(str(tmp_path), keep=2)
    for step in (1, 2, 3):
        _write(manager, step)
    assert manager.steps() == [2, 3]
    assert manager.latest_valid() == (3, manager.path(3))
    assert not any(name.startswith(".staging") for name in os.listdir(tmp_path))


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_bad_checkpoint_falls_back_to_previous(tmp_path, damage, caplog):
    manager = CheckpointManager(str(tmp_path), keep=3)
    _write(manager, 1)
    latest = _write(manager, 2)
    target = os.path.join(latest, "policy", "model.bin")
    if damage == "truncate":
        with open(target, "r+b") as fh:
            fh.truncate(10)
    elif damage == "flip":
        with open(target, "r+b") as fh:
            fh.seek(5)
            fh.write(b"X")
    else:
        os.remove(os.path.join(latest, "manifest.json"))
    with pytest.raises(CheckpointError) as err:
        verify(latest)
    assert latest in str(err.value)
    assert manager.latest_valid() == (1, manager.path(1))
    assert "skipping bad checkpoint" in caplog.text


def test_unfinished_staging_is_not_a_checkpoint(tmp_path):
    manager = CheckpointManager(str(tmp_path), keep=2)
    manager.staging(5)  # a crash mid-save leaves only this
    assert manager.latest_valid() is None


def test_latest_trainer_state_reads_the_newest_complete_checkpoint(tmp_path):
    manager = CheckpointManager(str(tmp_path), keep=3)
    assert manager.latest_trainer_state() is None
    _write(manager, 1)
    _write(manager, 2)
    with open(os.path.join(manager.path(2), "policy", "model.bin"), "ab") as fh:
        fh.write(b"x")  # step 2 damaged after its manifest: step 1 is the newest complete one
    assert manager.latest_trainer_state() == (manager.path(1), {"step": 1})
