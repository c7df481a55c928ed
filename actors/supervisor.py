"""Watching the actor groups while a step runs: fail-fast gets, who died, restarts and retries.

Ray restarts an actor created with `max_restarts` by rerunning its constructor, so a
restarted rollout engine holds the base weights again: after a restart the runtime's
`on_restart` hook re-pushes the current policy weights before the phase is retried. Phases
are deterministic given the step (seeded sampling, frozen models), so a retried phase gives
what the first attempt would have. Training ranks are never restarted (see rlhf/faults.py).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional, TypeVar

import ray

from actors.groups import ActorGroup
from rlhf.faults import RESTARTABLE_ROLES, TRAINED_ROLES, TrainingRankDied, dead_role_message

logger = logging.getLogger(__name__)
T = TypeVar("T")


def get_fail_fast(refs: list) -> list:
    """Like ray.get(refs), but raises the first failure as soon as it happens.

    When one training rank dies, the others block in a collective until its timeout (or fail at once
    with a connection error: run_phase names the dead rank then); a plain ray.get on the list could
    wait on a blocked survivor first and notice the death late.
    """
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready)
    return ray.get(list(refs))


class Supervisor:
    def __init__(self, groups: dict[str, ActorGroup], step_retries: int, restart_timeout_s: float) -> None:
        self.groups = groups
        self.step_retries = step_retries
        self.restart_timeout_s = restart_timeout_s
        self.restarts = 0
        self.pids: dict[str, list[int]] = {}

    def record(self, placement_log: dict[str, list[dict]]) -> None:
        """Remember each replica's process, to notice a restart no call failed on."""
        self.pids = {name: [w["pid"] for w in where] for name, where in placement_log.items()}

    def restarted(self, role: str) -> Optional[int]:
        """The first replica of `role` that now runs in another process than recorded, or None.

        A call sent while Ray restarts an actor is queued and then served by the new process,
        without any error: for a rollout engine that means sampling from the base weights.
        Calls from one caller to an actor run in order, so asking after the phase tells whether
        the phase could have been served by a restarted process.
        """
        now = [w["pid"] for w in get_fail_fast(self.groups[role].call("where"))]
        changed = [rank for rank, (a, b) in enumerate(zip(now, self.pids.get(role, now))) if a != b]
        return changed[0] if changed else None

    def role_of(self, err: ray.exceptions.RayActorError) -> tuple[str, int]:
        """(role, replica) of the actor an error is about; probes the groups when Ray did not say."""
        for name, group in self.groups.items():
            for rank, handle in enumerate(group.handles):
                if err.actor_id is not None and handle._actor_id.hex() == err.actor_id:
                    return name, rank
        for name, group in self.groups.items():
            for rank, handle in enumerate(group.handles):
                try:
                    ray.get(handle.where.remote(), timeout=10)
                except Exception:
                    return name, rank
        return "unknown", -1

    def dead_replica(self, roles: tuple[str, ...], timeout_s: float = 10.0) -> Optional[tuple[str, int]]:
        """(role, replica) of the first replica of `roles` that Ray reports dead, or None.

        Only a death counts: a survivor still blocked in a collective with the dead rank does not
        answer within `timeout_s` either, and it is alive."""
        for name in roles:
            for rank, handle in enumerate(self.groups[name].handles if name in self.groups else []):
                try:
                    ray.get(handle.where.remote(), timeout=timeout_s)
                except ray.exceptions.RayActorError:
                    return name, rank
                except ray.exceptions.GetTimeoutError:
                    continue
        return None

    def run_phase(self, phase: str, fn: Callable[[], T], on_restart: Callable[[str], None],
                  last_checkpoint: Callable[[], Optional[str]], stateful: tuple[str, ...] = ()) -> T:
        """Run `fn`; if a restartable actor died, wait for Ray to restart it and retry the phase.

        `stateful` roles hold state a restart loses (engines' weights): after `fn` they are checked
        for a silent restart, which is handled like a failed call. Recovery (waiting for the
        restarted actor, `on_restart`) runs under the same watch as the phase: under Ray 2.60 any
        call to an actor that is still restarting fails, so a second death found while recovering
        from the first is one more death to recover from, not the end of the run.
        """
        recovering: list[str] = []  # roles Ray is restarting, in the order their deaths were seen
        for attempt in range(self.step_retries + 1):
            try:
                for role in recovering:  # every known death answers again before any hook calls around
                    self.wait_alive(role)
                while recovering:
                    on_restart(recovering[0])
                    recovering.pop(0)
                result = fn()
                silent = [(role, rank) for role in stateful
                          if role in self.groups and (rank := self.restarted(role)) is not None]
                if not silent:
                    return result
                role, rank = silent[0]
                if attempt == self.step_retries:
                    raise RuntimeError(f"{role} replica {rank} restarted during {phase} on every attempt "
                                       f"(ray.step_retries={self.step_retries})")
                self.restarts += 1
                logger.warning("%s replica %d died and was restarted by Ray around %s (its state is lost); "
                               "re-running the phase (attempt %d of %d)", role, rank, phase, attempt + 2,
                               self.step_retries + 1)
                recovering.append(role)
            except ray.exceptions.RayActorError as err:
                role, rank = self.role_of(err)
                if role in TRAINED_ROLES:
                    raise TrainingRankDied(dead_role_message(role, rank, phase, last_checkpoint())) from err
                if role not in RESTARTABLE_ROLES or attempt == self.step_retries:
                    raise RuntimeError(f"{role} replica {rank} died during {phase} and the phase failed "
                                       f"{attempt + 1} time(s) (ray.step_retries={self.step_retries})") from err
                self.restarts += 1
                logger.warning("%s replica %d died during %s (%s); waiting for Ray to restart it, then "
                               "retrying the phase (attempt %d of %d)", role, rank, phase,
                               type(err).__name__, attempt + 2, self.step_retries + 1)
                if role not in recovering:
                    recovering.append(role)
            except ray.exceptions.RayTaskError as err:  # after RayActorError: a task error may be both
                # A killed training rank's peers fail their collective at once ("Connection reset by peer"),
                # often before Ray has reported the death itself: name the dead rank, not the survivor's symptom.
                dead = self.dead_replica(TRAINED_ROLES)
                if dead is None:
                    raise
                raise TrainingRankDied(dead_role_message(*dead, phase, last_checkpoint())) from err
        raise AssertionError("unreachable")

    def wait_alive(self, role: str) -> None:
        """Block until every replica of `role` answers, or fail after restart_timeout_s naming it."""
        deadline = time.monotonic() + self.restart_timeout_s
        for rank, handle in enumerate(self.groups[role].handles):
            while True:
                try:
                    ray.get(handle.where.remote(), timeout=max(1.0, deadline - time.monotonic()))
                    break
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{role} replica {rank} did not come back within "
                                           f"{self.restart_timeout_s:g}s after dying (ray.max_restarts spent, "
                                           f"or no room to place it): {err}") from err
                    time.sleep(1.0)
        logger.warning("%s: all %d replica(s) alive again", role, len(self.groups[role]))
