"""Shared fixtures: real servers on free loopback ports, stopped by PID after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.mosquitto import Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous Mosquitto broker on a free port."""
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker
