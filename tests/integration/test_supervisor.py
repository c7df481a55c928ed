"""The supervisor against real Ray restarts, with small actors whose deaths the test controls.

Under Ray 2.60 a call to an actor that Ray is still restarting fails ("The actor is restarting")
instead of waiting. A run on the two-node cluster lost its job that way: the reward worker died
during a phase, and re-recording where every actor runs (part of recovering from that death)
called the reference, which had been killed a moment earlier and was still restarting.
"""
from __future__ import annotations

import os
import signal
import time

import pytest
import ray

from actors.groups import ActorGroup
from actors.supervisor import Supervisor
from rlhf.faults import TrainingRankDied


def _make_worker_class(ray):
    @ray.remote(num_cpus=0, max_restarts=3)
    class Worker:
        """Dies on its first `work` call when told to; a restart can be held until a file appears."""

        def __init__(self, folder: str, name: str) -> None:
            self.folder, self.name = folder, name
            started = os.path.join(folder, f"{name}.started")
            if os.path.exists(started):  # this is a restart
                release = os.path.join(folder, f"{name}.release")
                deadline = time.monotonic() + 60
                while os.path.exists(os.path.join(folder, f"{name}.hold")) and not os.path.exists(release):
                    if time.monotonic() > deadline:
                        raise RuntimeError("never released")
                    time.sleep(0.05)
            open(started, "a").close()

        def where(self) -> dict:
            return {"pid": os.getpid()}

        def work(self, value: int) -> int:
            die_once = os.path.join(self.folder, f"{self.name}.die_once")
            if os.path.exists(die_once):
                os.remove(die_once)
                os.kill(os.getpid(), signal.SIGKILL)
            return value * 2

    return Worker


@pytest.fixture
def workers(ray_session, tmp_path):
    worker = _make_worker_class(ray_session)
    made = []

    def make(*roles: str) -> dict[str, ActorGroup]:
        groups = {role: ActorGroup(role, [worker.remote(str(tmp_path), role)]) for role in roles}
        for group in groups.values():
            ray_session.get(group.call("where"))
        made.extend(groups.values())
        return groups

    yield make
    for group in made:
        for handle in group.handles:
            ray_session.kill(handle, no_restart=True)


def _kill(group: ActorGroup) -> None:
    os.kill(group.where()[0]["pid"], signal.SIGKILL)


def test_a_death_found_while_recovering_from_another_is_recovered_too(workers, tmp_path, caplog):
    groups = workers("reward", "reference")
    supervisor = Supervisor(groups, step_retries=2, restart_timeout_s=60)
    # The reference is killed and its restart held until the hook has met it restarting.
    (tmp_path / "reference.hold").touch()
    _kill(groups["reference"])
    (tmp_path / "reward.die_once").touch()
    hooked: list[str] = []

    def on_restart(role: str) -> None:  # like the runtime's: re-records every actor's process
        hooked.append(role)
        try:
            [group.where() for group in groups.values()]
        finally:
            (tmp_path / "reference.release").touch()

    calls = []

    def phase() -> int:
        calls.append(1)
        return ray.get(groups["reward"].call("work", 21))[0]

    assert supervisor.run_phase("experience", phase, on_restart, lambda: None) == 42
    # reward died in the phase; the reference was found restarting while recovering from that; the
    # reward's recovery is redone once the reference answers, then the phase runs again.
    assert hooked == ["reward", "reward", "reference"]
    assert len(calls) == 2 and supervisor.restarts == 2
    assert "reward replica 0 died during experience" in caplog.text
    assert "reference replica 0 died during experience" in caplog.text


def test_a_silent_restart_of_a_stateful_role_reruns_the_phase(workers):
    groups = workers("rollout")
    supervisor = Supervisor(groups, step_retries=2, restart_timeout_s=60)
    supervisor.record({"rollout": groups["rollout"].where()})
    before = groups["rollout"].where()[0]["pid"]
    _kill(groups["rollout"])
    deadline = time.monotonic() + 60  # killed between two calls, restarted before the next one
    while True:
        try:
            if groups["rollout"].where()[0]["pid"] != before:
                break
        except ray.exceptions.RayActorError:
            assert time.monotonic() < deadline, "the rollout worker was not restarted"
            time.sleep(0.2)
    hooked: list[str] = []

    def on_restart(role: str) -> None:
        hooked.append(role)
        supervisor.record({"rollout": groups["rollout"].where()})

    def phase() -> int:  # served by the new process without an error: only the pid tells
        return ray.get(groups["rollout"].call("work", 1))[0]

    assert supervisor.run_phase("generate", phase, on_restart, lambda: None, stateful=("rollout",)) == 2
    assert hooked == ["rollout"] and supervisor.restarts == 1


def test_retries_are_bounded_and_training_deaths_are_not_retried(workers, tmp_path):
    groups = workers("reward", "policy")
    supervisor = Supervisor(groups, step_retries=0, restart_timeout_s=60)
    (tmp_path / "reward.die_once").touch()
    with pytest.raises(RuntimeError, match=r"reward replica 0 died during experience .*ray.step_retries=0"):
        supervisor.run_phase("experience", lambda: ray.get(groups["reward"].call("work", 1)),
                             lambda role: None, lambda: None)
    (tmp_path / "policy.die_once").touch()
    with pytest.raises(TrainingRankDied, match="policy"):
        supervisor.run_phase("train", lambda: ray.get(groups["policy"].call("work", 1)),
                             lambda role: None, lambda: "/ckpt/step_3")


def test_a_survivors_collective_error_is_reported_as_the_dead_ranks_death(workers, ray_session):
    """A SIGKILLed rank's peers fail their gloo collective at once ("Connection reset by peer"), often before
    Ray reports the death: the run must still stop naming the dead rank (seen on the three-node cluster)."""
    groups = workers("policy", "reward")

    @ray.remote(num_cpus=0)
    def survivors_all_reduce() -> None:
        raise RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer")

    supervisor = Supervisor(groups, step_retries=2, restart_timeout_s=60)
    with pytest.raises(RuntimeError, match="Connection reset by peer") as alive:  # nobody died: unchanged
        supervisor.run_phase("train", lambda: ray.get(survivors_all_reduce.remote()), lambda role: None, lambda: None)
    assert not isinstance(alive.value, TrainingRankDied)

    ray_session.kill(groups["policy"].handles[0], no_restart=True)
    with pytest.raises(TrainingRankDied, match=r"policy replica 0 died during train.*/ckpt/step_3"):
        supervisor.run_phase("train", lambda: ray.get(survivors_all_reduce.remote()), lambda role: None,
                             lambda: "/ckpt/step_3")
    assert supervisor.restarts == 0
