"""Coils and discrete inputs as a real pymodbus client reads them (FC1/FC2), over Modbus TCP
and RTU on a pty, and contacts packed into a register (FC3).

The simulator keeps each contact's raw bit and lays it into pymodbus's packed bit tables; the
client decodes with ``DeviceProfile.decode_bits`` of ``protocols.registers`` (``invert``
applied), an independent path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pymodbus.exceptions import ModbusIOException

from protocols.registers import (
    BitBlock,
    BitPoint,
    BitTable,
    DeviceProfile,
    Meaning,
    ReadBlock,
    RegisterType,
    get_profile,
)
from simulators.modbus.model import Action, AutoStart, BusModel, ManualClock
from simulators.modbus.scenario import DeviceSpec, Scenario
from simulators.modbus.server import Running, serve_rtu_pty, serve_tcp

from .helpers import Client, read_value, rtu_client, tcp_client

# A relay output module whose coils straddle a 16-bit boundary (pymodbus packs 16 to a
# register): no built-in profile has coils, a real site may.
RELAYS = DeviceProfile(
    "relay-test", "relay test", "coils 14..17", (),
    bit_points=tuple(BitPoint(f"out{n}", Meaning.SUPERVISORY, BitTable.COIL, 13 + n)
                     for n in range(1, 5)), bit_gap=3)
DEVICES = (
    DeviceSpec(1, get_profile("pressure-a"), "hydrant-3F", {"pressure": 0.35}),
    DeviceSpec(7, get_profile("di-8"), "di-module"),
    DeviceSpec(8, get_profile("valve-4"), "valves", contacts={"valve_4": "closed"}),
    DeviceSpec(9, get_profile("fire-pump"), "pump-1", {"outlet_pressure": 0.35},
               auto_start=AutoStart(1, 0.25)),
    DeviceSpec(10, RELAYS, "relays", contacts={"out2": "active"}),
)


@dataclass
class Bits:
    bus: BusModel
    clock: ManualClock
    running: Running
    client: Client


@pytest.fixture(params=["tcp", "rtu"])
async def bits(request: pytest.FixtureRequest) -> AsyncIterator[Bits]:
    clock = ManualClock()
    bus = Scenario(DEVICES, noise=0.0).build(clock)
    if request.param == "tcp":
        async with serve_tcp(bus) as running, tcp_client(running.address) as client:
            yield Bits(bus, clock, running, client)
    else:
        async with serve_rtu_pty(bus, pace=False) as running, \
                rtu_client(running.address) as client:
            yield Bits(bus, clock, running, client)


async def read_bits(client: Client, unit: int, table: BitTable, start: int, count: int
                    ) -> list[bool]:
    if table is BitTable.COIL:
        reply = await client.read_coils(start, count=count, device_id=unit)
    else:
        reply = await client.read_discrete_inputs(start, count=count, device_id=unit)
    assert not reply.isError(), f"unit {unit} {table} {start}+{count}: {reply}"
    return list(reply.bits[:count])


async def states(client: Client, unit: int, profile: DeviceProfile) -> dict[str, bool]:
    """Every contact's logical state, read the way the edge driver plans it."""
    out: dict[str, bool] = {}
    for block in profile.bit_blocks():
        out.update(profile.decode_bits(
            block, await read_bits(client, unit, block.table, block.start, block.count)))
    for rblock in profile.read_blocks():
        reply = await client.read_holding_registers(rblock.start, count=rblock.count,
                                                    device_id=unit)
        assert not reply.isError(), reply
        out.update(profile.decode_bits(rblock, reply.registers))
    return out


async def exception_code(client: Client, fn: int, unit: int, start: int, count: int) -> int:
    call = {1: client.read_coils, 2: client.read_discrete_inputs}[fn]
    reply = await call(start, count=count, device_id=unit)
    assert reply.isError(), f"expected an exception reply, got {reply}"
    return int(reply.exception_code)


async def test_discrete_inputs_of_a_valve_monitor(bits: Bits) -> None:
    c = bits.client
    valves = get_profile("valve-4")
    # 1 = valve fully open; valve 4 was left closed by the scenario
    assert await read_bits(c, 8, BitTable.DISCRETE_INPUT, 0, 4) == [True, True, True, False]
    assert await states(c, 8, valves) == {"valve_1": True, "valve_2": True, "valve_3": True,
                                          "valve_4": False}
    bits.bus.trigger(8, Action.VALVE_CLOSE, point="valve_2")
    bits.bus.trigger(8, Action.VALVE_OPEN, point="valve_4")
    assert await read_bits(c, 8, BitTable.DISCRETE_INPUT, 0, 4) == [True, False, True, True]
    assert await read_bits(c, 8, BitTable.DISCRETE_INPUT, 1, 2) == [False, True]  # offset read


async def test_a_generic_module_serves_raw_contacts_and_refuses_what_it_has_not(
        bits: Bits) -> None:
    c = bits.client
    assert await read_bits(c, 7, BitTable.DISCRETE_INPUT, 0, 8) == [False] * 8
    bits.bus.trigger(7, Action.CONTACT, point="ch3", state="closed")
    bits.bus.trigger(7, Action.CONTACT, point="ch8", state="closed")
    assert await read_bits(c, 7, BitTable.DISCRETE_INPUT, 0, 8) == [
        False, False, True, False, False, False, False, True]
    assert await exception_code(c, 2, 7, 8, 1) == 2  # input 9 does not exist on a DI-8
    assert await exception_code(c, 2, 7, 0, 9) == 2  # nor does a read running past DI8
    assert await exception_code(c, 1, 7, 0, 1) == 1  # no coils at all: illegal function
    assert await exception_code(c, 2, 1, 0, 1) == 1  # a pressure transmitter has no inputs
    write = await c.write_coil(0, True, device_id=7)
    assert write.isError() and write.exception_code == 1


async def test_coils_across_a_16_bit_boundary_and_writes_refused(bits: Bits) -> None:
    c = bits.client
    assert await read_bits(c, 10, BitTable.COIL, 14, 4) == [False, True, False, False]
    bits.bus.trigger(10, Action.CONTACT, point="out4", state="active")
    assert await read_bits(c, 10, BitTable.COIL, 14, 4) == [False, True, False, True]
    assert await read_bits(c, 10, BitTable.COIL, 16, 2) == [False, True]  # second register
    assert await exception_code(c, 1, 10, 13, 2) == 2  # 13 is not a coil here
    write = await c.write_coil(15, False, device_id=10)
    assert write.isError() and write.exception_code == 2  # inputs only: nothing is written
    assert await read_bits(c, 10, BitTable.COIL, 15, 1) == [True]


async def test_contacts_in_a_register_with_an_inverted_one(bits: Bits) -> None:
    c, pump = bits.client, get_profile("fire-pump")
    reply = await c.read_holding_registers(2, count=1, device_id=9)
    assert reply.registers == [0b100]  # stopped, no fault, bit 2 "auto" set
    assert await states(c, 9, pump) == {"run": False, "fault": False, "manual": False}
    bits.bus.trigger(9, Action.MANUAL)
    reply = await c.read_holding_registers(0, count=3, device_id=9)
    assert reply.registers == [350, 350, 0b000]  # kPa, kPa; manual: the auto bit drops
    assert pump.decode_bits(ReadBlock(RegisterType.HOLDING, 0, 3), reply.registers)[
        "manual"] is True


async def test_the_pump_starts_on_the_pressure_drop_then_trips(bits: Bits) -> None:
    """hydrant_open at t=10 (0.35 -> 0.05 MPa, tau 1.5 s): the pressure switch at 0.25 MPa
    trips at 10 + 1.5 ln(0.30/0.20) = 10.608 s; the pump runs and the pressure recovers; a
    pump_fault then stops it and the pressure falls away again."""
    c, bus, clock = bits.client, bits.bus, bits.clock
    pump, hydrant = get_profile("fire-pump"), get_profile("pressure-a")
    clock.advance(10.0)
    bus.trigger(1, Action.HYDRANT_OPEN)
    clock.advance(0.6)
    assert (await states(c, 9, pump))["run"] is False  # 0.2502 MPa: not yet
    clock.advance(0.02)
    assert (await states(c, 9, pump))["run"] is True
    assert bus.advance() == []  # the start was applied by the read above, once
    clock.advance(20.0)
    assert await read_value(c, 1, hydrant) == pytest.approx(0.65, abs=0.01)
    assert await read_value(c, 9, pump, "outlet_pressure") == pytest.approx(650, abs=10)
    bus.trigger(9, Action.PUMP_FAULT)
    assert await states(c, 9, pump) == {"run": False, "fault": True, "manual": False}
    clock.advance(20.0)
    assert await read_value(c, 1, hydrant) == pytest.approx(0.05, abs=0.01)  # no restart
    assert (await states(c, 9, pump))["run"] is False


async def test_a_bouncing_contact_as_a_fast_poller_sees_it(bits: Bits) -> None:
    c, bus, clock = bits.client, bits.bus, bits.clock
    bus.trigger(8, Action.VALVE_CLOSE, point="valve_1", bounce=2, bounce_s=0.5)
    seen = []
    for _ in range(10):
        clock.advance(0.25)  # polls at 0.25, 0.50, ... 2.50 s after the change
        seen.append((await read_bits(c, 8, BitTable.DISCRETE_INPUT, 0, 1))[0])
    # closed (0) 0-0.5 s, open 0.5-1, closed 1-1.5, open 1.5-2, closed from 2 s
    assert seen == [False, True, True, False, False, True, True, False, False, False]


async def test_silence_and_exceptions_cover_bit_reads(bits: Bits) -> None:
    c, bus = bits.client, bits.bus
    bus.trigger(8, Action.EXCEPTION, code=6)
    assert await exception_code(c, 2, 8, 0, 4) == 6
    bus.trigger(8, Action.SILENCE)
    with pytest.raises(ModbusIOException):
        await c.read_discrete_inputs(0, count=4, device_id=8)
    assert bits.running.stats.dropped_by_id.get(8, 0) >= 1
    bus.trigger(8, Action.RESTORE)
    assert await read_bits(c, 8, BitTable.DISCRETE_INPUT, 0, 4) == [True, True, True, False]


def test_bit_blocks_planned_by_the_profile_are_what_the_server_serves() -> None:
    """The reads the edge plans (``bit_blocks``) lie wholly on served contacts."""
    assert get_profile("di-8").with_channels({}).bit_blocks() == []
    assert get_profile("valve-4").bit_blocks() == [BitBlock(BitTable.DISCRETE_INPUT, 0, 4)]
    assert RELAYS.bit_blocks() == [BitBlock(BitTable.COIL, 14, 4)]
