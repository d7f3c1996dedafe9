"""Shared fixtures: real servers on free loopback ports, stopped by PID after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hypothesis  # see below
import pytest

from tests.infra.mosquitto import Mosquitto

# hypothesis is imported here, before any test runs, rather than lazily by its pytest plugin in
# the end-of-run summary: the BLE bus-restart test leaves CPython 3.11's C recursion counter
# off (cpython#106905, dbus-fast's unwinding), and a module first compiled after that fails
# with "AST constructor recursion depth mismatch", failing a run whose tests all passed.


# ./dev mutate (docs/testing.md) runs some groups with --hypothesis-profile=mutation: a failing
# example is all mutation testing needs, and shrinking it costs minutes per mutant.
hypothesis.settings.register_profile("mutation", phases=[
    hypothesis.Phase.explicit, hypothesis.Phase.reuse, hypothesis.Phase.generate])


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous Mosquitto broker on a free port."""
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker
