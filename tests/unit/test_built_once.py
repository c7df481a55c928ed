"""tests/conftest.built_once under pytest-xdist: a build that failed part-way is not built upon."""
from __future__ import annotations

import pytest

from tests.conftest import built_once


class _Factory:
    """What built_once reads of pytest's tmp_path_factory: one worker's base folder under the run's."""

    def __init__(self, base):
        self.base = base

    def getbasetemp(self):
        return self.base


def test_a_failed_build_leaves_nothing_for_the_next_worker_to_build_upon(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")

    def broken(folder):
        folder.mkdir()
        (folder / "half_written").write_text("x")
        raise RuntimeError("the build failed")

    with pytest.raises(RuntimeError, match="the build failed"):
        built_once(_Factory(tmp_path / "gw0"), "assets", broken)
    calls = []

    def good(folder):
        folder.mkdir()  # fails if the broken build's folder were still there
        (folder / "model").write_text("ok")
        calls.append(folder)

    folder = built_once(_Factory(tmp_path / "gw1"), "assets", good)
    assert sorted(p.name for p in folder.iterdir()) == ["model"] and len(calls) == 1
    assert built_once(_Factory(tmp_path / "gw0"), "assets", good) == folder and len(calls) == 1  # built once
