"""The simulator as a real pymodbus client sees it, over Modbus TCP and Modbus RTU on a pty.

Every test here runs twice (``served`` is parametrised by transport). Values are decoded with
``protocols.registers``, while the simulator lays them out with pymodbus's own converter.
"""

from __future__ import annotations

import pytest
from pymodbus.exceptions import ModbusIOException

from protocols.registers import (
    DataType,
    ReadBlock,
    RegisterType,
    WordOrder,
    convert,
    get_profile,
    pack_raw,
)
from simulators.modbus.model import Action

from .conftest import BUS, Served
from .helpers import read_block, read_device, read_value


async def test_every_device_on_the_bus_reads_with_its_own_layout(served: Served) -> None:
    for spec in BUS:
        values = await read_device(served.client, spec.id, spec.profile)
        for point in spec.profile.points:
            expected = convert(spec.initial[point.name], point.canonical_unit, point.unit)
            assert values[point.name] == pytest.approx(expected, abs=point.scale / 2 + 1e-6), (
                f"device {spec.id} {point.name}")
        for word in spec.profile.status_words:
            assert word.name in values


async def test_word_order_and_signs_on_the_wire(served: Served) -> None:
    """The raw registers, not only the decoded values, have each model's layout."""
    c = served.client
    f32 = await read_block(c, 2, ReadBlock(RegisterType.INPUT, 0, 2))
    assert f32.registers == pack_raw(523.4, DataType.F32, WordOrder.LITTLE)  # low word first
    assert f32.registers != pack_raw(523.4, DataType.F32, WordOrder.BIG)
    u32 = await read_block(c, 3, ReadBlock(RegisterType.HOLDING, 0x100, 2))
    assert u32.registers == [678_912 >> 16, 678_912 & 0xFFFF]  # Pa, high word first
    pool = await read_block(c, 5, ReadBlock(RegisterType.INPUT, 0x10, 1))
    assert pool.registers == [0x10000 - 5]  # 0.15 m is 5 cm *below* the probe at 0.20 m
    board = await read_block(c, 6, ReadBlock(RegisterType.HOLDING, 0, 6))
    assert board.registers == [123, 215, 0x10000 - 53, 888, 300, 0b10]  # temperature alarm set


async def test_hydrant_pump_and_tank_dynamics(served: Served) -> None:
    c, bus, clock = served.client, served.bus, served.clock
    hydrant, tank = get_profile("pressure-a"), get_profile("level")
    bus.trigger(1, Action.HYDRANT_OPEN)
    bus.trigger(4, Action.DRAIN, rate=0.05)
    clock.advance(10.0)
    assert await read_value(c, 1, hydrant) < 0.15  # below the usual low-pressure alarm
    assert await read_value(c, 4, tank) == pytest.approx(4.321 - 0.5, abs=0.001)
    bus.trigger(1, Action.PUMP_START, to=0.7)
    clock.advance(20.0)
    assert await read_value(c, 1, hydrant) > 0.6
    bus.trigger(1, Action.PUMP_STOP)
    bus.trigger(1, Action.HYDRANT_CLOSE)
    bus.trigger(4, Action.REFILL, rate=0.1)
    clock.advance(60.0)
    assert await read_value(c, 1, hydrant) == pytest.approx(0.412, abs=0.002)
    assert await read_value(c, 4, tank) == pytest.approx(4.321, abs=0.001)


async def test_leak_creep_reaches_alarm(served: Served) -> None:
    board = get_profile("elec-fire")
    served.bus.trigger(6, Action.LEAK_CREEP, rate=10.0)
    served.clock.advance(20.0)
    values = await read_device(served.client, 6, board)
    assert values["residual_current"] == pytest.approx(323.0)
    assert values["status"] == frozenset({"residual_current_alarm", "temperature_alarm"})


async def test_silenced_device_times_out_and_the_bus_carries_on(served: Served) -> None:
    c, bus = served.client, served.bus
    level = get_profile("level")
    bus.trigger(4, Action.SILENCE)
    with pytest.raises(ModbusIOException, match="No response"):
        await read_value(c, 4, level)
    # the other devices on the same line still answer, and so does the device once restored
    assert await read_value(c, 1, get_profile("pressure-a")) == pytest.approx(0.412)
    bus.trigger(4, Action.RESTORE)
    assert await read_value(c, 4, level) == pytest.approx(4.321)
    assert served.running.stats.dropped_by_id == {4: 1}


async def test_unknown_device_id_is_silent(served: Served) -> None:
    """pymodbus alone answers exception 4 here; a real RS-485 line stays quiet."""
    with pytest.raises(ModbusIOException, match="No response"):
        await served.client.read_holding_registers(0, count=1, device_id=99)
    assert await read_value(served.client, 4, get_profile("level")) == pytest.approx(4.321)


@pytest.mark.parametrize("code", [2, 4, 6, 11])
async def test_exception_fault(served: Served, code: int) -> None:
    served.bus.trigger(2, Action.EXCEPTION, code=code)
    reply = await served.client.read_input_registers(0, count=3, device_id=2)
    assert reply.isError()
    assert (reply.function_code, reply.exception_code) == (0x84, code)
    served.bus.trigger(2, Action.RESTORE)
    assert not (await served.client.read_input_registers(0, count=3, device_id=2)).isError()


async def test_out_of_range_and_sensor_fault(served: Served) -> None:
    c, bus = served.client, served.bus
    pa, pb = get_profile("pressure-a"), get_profile("pressure-b")
    bus.trigger(1, Action.OUT_OF_RANGE)
    bus.trigger(2, Action.OUT_OF_RANGE, value=-0.05)
    bus.trigger(2, Action.SENSOR_FAULT)
    a, b = await read_device(c, 1, pa), await read_device(c, 2, pb)
    assert isinstance(a["pressure"], float) and not pa.primary.in_range(a["pressure"])
    assert a["status"] == frozenset({"over_range"})
    assert b["pressure"] == pytest.approx(-50.0)
    assert isinstance(b["pressure"], float) and not pb.primary.in_range(b["pressure"])
    assert b["status"] == frozenset({"sensor_fault", "loop_open"})


async def test_requests_a_transmitter_cannot_serve(served: Served) -> None:
    c = served.client
    wrong_table = await c.read_input_registers(2, count=1, device_id=4)  # level: holding only
    across_gap = await c.read_holding_registers(0, count=3, device_id=4)  # 0-1 are unmapped
    coils = await c.read_coils(0, count=1, device_id=4)
    write = await c.write_register(2, 1000, device_id=4)  # measurements are read-only
    assert [r.exception_code for r in (wrong_table, across_gap, coils, write)] == [2, 2, 1, 2]
    assert await read_value(c, 4, get_profile("level")) == pytest.approx(4.321)
