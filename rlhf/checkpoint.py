"""Checkpoint folders that are complete or absent, never half-written.

A checkpoint is written into a staging folder, given a manifest (size and sha256 of every
file), and only then renamed to `step_N`. Old checkpoints are pruned after the new one is
in place, so a crash during a save always leaves the previous one. On resume every file
is checked against the manifest; a bad checkpoint is reported by path and the previous
good one is used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from typing import Optional

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
"""The driver's own state in a checkpoint (step, sampler, controllers, RNG), beside the model folders."""
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files_under(folder: str) -> list[str]:
    found = []
    for root, _, files in os.walk(folder):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel != MANIFEST:
                found.append(rel)
    return sorted(found)


class CheckpointError(RuntimeError):
    pass


def verify(folder: str) -> None:
    """Raise CheckpointError naming the first missing, truncated or altered file."""
    manifest_path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise CheckpointError(f"{folder}: no {MANIFEST} (incomplete checkpoint)")
    try:
        with open(manifest_path, encoding="utf-8") as fh:
            manifest = json.load(fh)
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({err})") from None
    for rel, expected in files.items():
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: missing")
        if os.path.getsize(path) != expected["size"]:
            raise CheckpointError(f"{path}: size {os.path.getsize(path)} != {expected['size']} (truncated?)")
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path}: checksum mismatch (corrupt)")


class CheckpointManager:
    def __init__(self, root: str, keep: int) -> None:
        self.root = root
        self.keep = keep
        os.makedirs(root, exist_ok=True)

    def path(self, step: int) -> str:
        return os.path.join(self.root, f"step_{step}")

    def staging(self, step: int) -> str:
        folder = os.path.join(self.root, f".staging_step_{step}")
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        return folder

    def commit(self, step: int, staging: str) -> str:
        files = {
            rel: {"size": os.path.getsize(os.path.join(staging, rel)), "sha256": _sha256(os.path.join(staging, rel))}
            for rel in _files_under(staging)
        }
        with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as fh:
            json.dump({"step": step, "files": files}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        final = self.path(step)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(staging, final)
        self._prune()
        return final

    def steps(self) -> list[int]:
        found = []
        for name in os.listdir(self.root):
            match = _STEP_DIR.match(name)
            if match and os.path.isdir(os.path.join(self.root, name)):
                found.append(int(match.group(1)))
        return sorted(found)

    def _prune(self) -> None:
        for step in self.steps()[: -self.keep]:
            shutil.rmtree(self.path(step), ignore_errors=True)

    def latest_valid(self) -> Optional[tuple[int, str]]:
        """The newest checkpoint that passes `verify`; bad ones are logged by path and skipped."""
        for step in reversed(self.steps()):
            folder = self.path(step)
            try:
                verify(folder)
                return step, folder
            except CheckpointError as err:
                logger.warning("skipping bad checkpoint: %s", err)
        return None

    def save_trainer_state(self, staging: str, state: dict) -> None:
        with open(os.path.join(staging, TRAINER_STATE), "w", encoding="utf-8") as fh:
            json.dump(state, fh)

    def latest_trainer_state(self) -> Optional[tuple[str, dict]]:
        """(folder, driver state) of the newest complete checkpoint; None, logged, when there is none."""
        found = self.latest_valid()
        if found is None:
            logger.info("resume: no complete checkpoint under %s; starting from step 0", self.root)
            return None
        folder = found[1]
        with open(os.path.join(folder, TRAINER_STATE), encoding="utf-8") as fh:
            return folder, json.load(fh)
