"""Fixtures: a simulated bus served by pymodbus's own server, and a real pymodbus client on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from protocols.registers import get_profile
from simulators.modbus.model import BusModel, ManualClock
from simulators.modbus.scenario import DeviceSpec, Scenario
from simulators.modbus.server import Running, serve_rtu_pty, serve_tcp

from .helpers import Client, rtu_client, tcp_client

# One device of each profile on one bus, with initial values (canonical units) that exercise
# scaling, offsets and signs.
BUS = (
    DeviceSpec(1, get_profile("pressure-a"), "hydrant-3F", {"pressure": 0.412}),
    DeviceSpec(2, get_profile("pressure-b"), "sprinkler", {"pressure": 0.5234}),
    DeviceSpec(3, get_profile("pressure-c"), "main", {"pressure": 0.678912}),
    DeviceSpec(4, get_profile("level"), "roof-tank", {"level": 4.321}),
    DeviceSpec(5, get_profile("level-cm"), "pool", {"level": 0.15}),
    DeviceSpec(6, get_profile("elec-fire"), "board", {
        "residual_current": 123.0, "temperature_1": 21.5, "temperature_2": -5.3,
        "temperature_3": 88.8, "temperature_4": 30.0}),
)


@dataclass
class Served:
    """A bus on a manual clock, its running server and a connected client."""

    bus: BusModel
    clock: ManualClock
    running: Running
    client: Client
    transport: str


@pytest.fixture(params=["tcp", "rtu"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """The test bus over Modbus TCP, then over Modbus RTU on a pty (unpaced, for speed)."""
    clock = ManualClock()
    bus = Scenario(BUS, noise=0.0).build(clock)
    if request.param == "tcp":
        async with serve_tcp(bus) as running, tcp_client(running.address) as client:
            yield Served(bus, clock, running, client, "tcp")
    else:
        async with serve_rtu_pty(bus, pace=False) as running, \
                rtu_client(running.address) as client:
            yield Served(bus, clock, running, client, "rtu")
