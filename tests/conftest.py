"""Shared fixtures. Tests build tiny data in memory and never touch the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _data_dir() -> Path | None:
    env = os.environ.get("EMBEDSTACK_DATA_DIR")
    if env and Path(env).is_dir():
        return Path(env)
    return None


@pytest.fixture
def shared_data() -> Path:
    """The real datasets folder (EMBEDSTACK_DATA_DIR); tests using it skip when it is absent."""
    d = _data_dir()
    if d is None:
        pytest.skip("real datasets not reachable: set EMBEDSTACK_DATA_DIR (e.g. ../shared/data)")
    return d


@pytest.fixture
def data_env(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real datasets folder as EMBEDSTACK_DATA_DIR, offline (no download is attempted)."""
    monkeypatch.setenv("EMBEDSTACK_DATA_DIR", str(shared_data))
    monkeypatch.setenv("EMBEDSTACK_OFFLINE", "1")
    return shared_data
