"""Fixtures: the firmware compiled once per session with mpy-cross; a broker with the collector's
user (a node's lines are added by ``helpers.make_node``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import COLLECTOR, ProvisionedBroker, build


@pytest.fixture(scope="session")
def fw_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the firmware as flash.sh copies it: fg/*.mpy and main.py."""
    return build(tmp_path_factory.mktemp("fw-build"))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ProvisionedBroker]:
    b = ProvisionedBroker(tmp_path / "broker", users=dict([COLLECTOR]), tls=True)
    yield b
    b.stop()
