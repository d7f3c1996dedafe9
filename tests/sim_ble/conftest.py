"""Fixtures for the BLE simulator tests: a private bus with a mocked BlueZ per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulators.ble.bluez import ENV_VAR, MockBluez


@pytest.fixture
def bluez(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockBluez]:
    """A started MockBluez with ``DBUS_SYSTEM_BUS_ADDRESS`` pointing at it for this test."""
    mock = MockBluez()
    mock.start()
    monkeypatch.setenv(ENV_VAR, mock.address)
    try:
        yield mock
    finally:
        mock.stop()
