"""Contacts end to end in the Modbus driver: a real pymodbus server, the real driver and client.

The server (``modbus_bits_rig.ContactServer``) answers FC1/FC2/FC3 from tables the test flips
between polls, as a valve switch or a pump controller would. The driver's context is the real
interface (``emit`` appends to a list, as in test_modbus_driver.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import tomllib
from collections.abc import Sequence

import pytest

from common.config import Table
from edge.config.modbus import ModbusDeviceConfig, parse_modbus
from protocols.registers import (
    BitPoint,
    BitTable,
    Channel,
    DeviceProfile,
    Meaning,
    get_profile,
)
from protocols.wire import EventType, Measurement, Priority, Quantity, default_priority

from .modbus_bits_rig import ContactServer
from .test_modbus_driver import bus_config, running, wait_until


def contacts(unit: int, profile: DeviceProfile, *, interval_s: float = 0.05,
             debounce_ms: float = 0.0, report_interval_s: float = 300.0,
             name: str = "pump room DI") -> ModbusDeviceConfig:
    return ModbusDeviceConfig(unit=unit, name=name, profile=profile, interval_s=interval_s,
                              offline_after=2, backoff_max_s=1.0, debounce_ms=debounce_ms,
                              report_interval_s=report_interval_s)


def pump_config(unit: int, extra: str) -> ModbusDeviceConfig:
    text = f"""[[modbus]]\nname = "b1"\nhost = "127.0.0.1"\n[[modbus.device]]\nunit = {unit}
profile = "fire-pump"\ninterval_s = 0.05\n{extra}\n"""
    root = Table(tomllib.loads(text))
    return parse_modbus(root.tables("modbus")[0]).devices[0]


DI8 = get_profile("di-8").with_channels({
    1: Channel(Meaning.VALVE, "3F riser supply valve"),
    2: Channel(Meaning.RUN, "fire pump 1"),
    3: Channel(Meaning.FAULT, "fire pump 1", invert=True),  # fault relay energised while healthy
    8: Channel(Meaning.MANUAL, "smoke fan B1"),
})


def states(sink: object, suffix: str) -> list[float]:
    return [m.value for m in sink.measurements(suffix)  # type: ignore[attr-defined]
            if m.quantity is Quantity.STATE]


async def test_di_module_reports_each_contact_change_once_with_its_meaning() -> None:
    server = ContactServer((4,))
    di = server.devices[4].inputs
    di[0] = True  # valve open: its normal position
    di[2] = True  # fault relay energised: healthy
    async with server.serving(), running(bus_config(server.address, [contacts(4, DI8)],
                                                    rtu=False)) as (driver, ctx, sink):
        await wait_until(lambda: all(states(sink, f"4/ch{n}") for n in (1, 2, 3, 8)),
                         "first state of every contact")
        assert [states(sink, f"4/ch{n}")[0] for n in (1, 2, 3, 8)] == [1.0, 0.0, 0.0, 0.0]
        # nothing abnormal at start: no event at all
        assert not [r for r in sink.records if not isinstance(r, Measurement)]

        di[0] = False  # the valve is closed
        await wait_until(lambda: sink.states("4/ch1", EventType.VALVE_OFF_NORMAL) == [True],
                         "valve_off_normal raised")
        raised = sink.events("4/ch1", EventType.VALVE_OFF_NORMAL)[0]
        assert raised.source.description == "3F riser supply valve"
        assert raised.detail == "channel 1: closed (normal: open)"
        assert raised.priority is Priority.ALARM
        di[1] = True  # the pump runs
        di[2] = False  # and trips: the relay drops
        di[7] = True  # the fan's selector to manual
        await wait_until(lambda: sink.states("4/ch3", EventType.FAULT) == [True]
                         and sink.states("4/ch2", EventType.RUNNING) == [True]
                         and sink.states("4/ch8", EventType.MANUAL_MODE) == [True],
                         "running, fault, manual_mode raised")
        assert sink.events("4/ch2", EventType.RUNNING)[0].priority is \
            default_priority(EventType.RUNNING) is Priority.EVENT
        assert sink.events("4/ch3", EventType.FAULT)[0].detail == \
            "channel 3: fault (normal: ok)"
        di[0] = True
        di[1] = False
        await wait_until(lambda: sink.states("4/ch1", EventType.VALVE_OFF_NORMAL) == [True, False]
                         and sink.states("4/ch2", EventType.RUNNING) == [True, False],
                         "valve and pump back to normal")
        n_states = {n: len(states(sink, f"4/ch{n}")) for n in (1, 2, 3, 8)}
        await wait_until(lambda: driver.client.stats.by_unit[4] >= 10 + sum(n_states.values()),
                         "more polls")
        # each contact: one state per change (and the first), not one per poll
        assert {n: len(states(sink, f"4/ch{n}")) for n in (1, 2, 3, 8)} == \
            {1: 3, 2: 3, 3: 2, 8: 2}
        assert sink.states("4/ch1", EventType.VALVE_OFF_NORMAL) == [True, False]  # once each
    # DI1..DI8 in one FC2 request per poll (the module allows the gap DI4..DI7), nothing else;
    # the cancellation may cut one request short (sent, or answered but not read)
    counters = ctx.counters.snapshot()
    requests = server.devices[4].requests
    assert set(requests) == {2}
    assert counters["reads"] <= requests[2] <= driver.client.stats.requests \
        <= counters["reads"] + 1
    assert counters["contact_change"] == 6  # the first states read are no change


async def test_a_bounce_shorter_than_debounce_is_not_reported_and_a_change_waits_for_it(
        ) -> None:
    server = ContactServer((4,))
    di = server.devices[4].inputs
    di[0] = True
    debounce_ms = 400.0
    cfg = contacts(4, DI8, interval_s=0.05, debounce_ms=debounce_ms)
    async with server.serving(), running(bus_config(server.address, [cfg], rtu=False)) \
            as (driver, ctx, sink):
        await wait_until(lambda: states(sink, "4/ch1") == [1.0], "the valve's first state")
        # A bounce: seen by a poll, gone before debounce_ms: counted, never reported.
        polls = driver.client.stats.by_unit[4]
        di[0] = False
        await wait_until(lambda: driver.client.stats.by_unit[4] >= polls + 2, "seen closed")
        di[0] = True
        await wait_until(lambda: ctx.counters.get("bounce") >= 1, "the bounce counted")
        assert sink.events("4/ch1", EventType.VALVE_OFF_NORMAL) == []
        # A real change: reported, and not before it held for debounce_ms.
        changed_ms = time.time_ns() // 1_000_000
        di[0] = False
        await wait_until(lambda: sink.states("4/ch1", EventType.VALVE_OFF_NORMAL) == [True],
                         "valve_off_normal after the debounce")
        raised = sink.events("4/ch1", EventType.VALVE_OFF_NORMAL)[0]
        assert raised.receive_ms - changed_ms >= debounce_ms - 60  # one poll may predate it
        assert states(sink, "4/ch1") == [1.0, 0.0]


async def test_debounce_polls_again_when_the_time_is_up_not_at_the_next_interval() -> None:
    """A slow poll interval does not add to the debounce: the driver asks again when
    ``debounce_ms`` is up, so the change is reported after about debounce_ms."""
    server = ContactServer((4,))
    cfg = contacts(4, DI8, interval_s=30.0, debounce_ms=50.0)
    async with server.serving(), running(bus_config(server.address, [cfg], rtu=False)) \
            as (driver, _ctx, sink):
        await wait_until(lambda: states(sink, "4/ch1") == [0.0], "first poll (valve closed)")
        # The first poll saw the closed valve; the next interval is 30 s away, yet the
        # confirmation poll comes after the 50 ms debounce.
        await wait_until(lambda: sink.states("4/ch1", EventType.VALVE_OFF_NORMAL) == [True],
                         "raised well before the 30 s interval")
        assert driver.client.stats.by_unit[4] == 2


async def test_pump_controller_bits_in_a_register_with_its_pressures() -> None:
    server = ContactServer((9,))
    hr = server.devices[9].holding
    hr[0], hr[1], hr[2] = 650, 12, 0b100  # 0.65 MPa out, 12 kPa in; auto, stopped, healthy
    # through the config, as an installer writes it: the contacts are described
    # "<device name> <contact>" unless a channel says otherwise
    cfg = pump_config(9, 'name = "fire pump 1"\nchannels.2 = ":fire pump 1 overload"')
    async with server.serving(), running(bus_config(server.address, [cfg], rtu=False)) \
            as (_driver, _ctx, sink):
        await wait_until(lambda: states(sink, "9/manual") and sink.measurements(
            "9/outlet_pressure"), "first poll")
        assert sink.measurements("9/outlet_pressure")[0].value == 0.65
        assert sink.measurements("9/inlet_pressure")[0].value == 0.012
        assert [states(sink, f"9/{n}") for n in ("run", "fault", "manual")] == \
            [[0.0], [0.0], [0.0]]
        assert not [r for r in sink.records if not isinstance(r, Measurement)]
        hr[2] = 0b011  # running, fault, and the auto bit dropped: manual
        await wait_until(lambda: sink.states("9/manual", EventType.MANUAL_MODE) == [True],
                         "manual_mode raised")
        assert sink.states("9/run", EventType.RUNNING) == [True]
        assert sink.states("9/fault", EventType.FAULT) == [True]
        manual = sink.events("9/manual", EventType.MANUAL_MODE)[0]
        assert manual.source.description == "fire pump 1 auto/manual"
        assert sink.events("9/fault", EventType.FAULT)[0].source.description == \
            "fire pump 1 overload"
        assert sink.events("9/run", EventType.RUNNING)[0].source.description == \
            "fire pump 1 run"
        assert manual.detail == "channel 3: manual (normal: auto)"
    # one FC3 read of registers 0-2 per poll: pressures and contacts together
    assert set(server.devices[9].requests) == {3}


async def test_coils_are_read_with_fc1_and_gaps_are_not_bridged_by_default() -> None:
    relay = DeviceProfile("relay", "test", "two coils apart", points=(), bit_points=(
        BitPoint("door", Meaning.DOOR, BitTable.COIL, 0, description="stair door"),
        BitPoint("flow", Meaning.SUPERVISORY, BitTable.COIL, 5, description="flow switch")))
    assert [(b.start, b.count) for b in relay.bit_blocks()] == [(0, 1), (5, 1)]
    server = ContactServer((2,))
    coils = server.devices[2].coils
    async with server.serving(), running(bus_config(server.address,
                                                    [contacts(2, relay)], rtu=False)) \
            as (driver, _ctx, sink):
        await wait_until(lambda: states(sink, "2/flow"), "first poll")
        coils[0] = coils[5] = True
        await wait_until(lambda: sink.states("2/door", EventType.DOOR_OPEN) == [True]
                         and sink.states("2/flow", EventType.SUPERVISORY) == [True],
                         "door_open and supervisory")
    requests = server.devices[2].requests
    assert set(requests) == {1}  # FC1 only
    assert 4 <= requests[1] <= driver.client.stats.requests <= requests[1] + 1  # 2+ polls


async def test_proof_of_life_repeats_the_state_without_a_change() -> None:
    server = ContactServer((4,))
    server.devices[4].inputs[0] = server.devices[4].inputs[2] = True  # all normal
    cfg = contacts(4, DI8, report_interval_s=1.0)
    async with server.serving(), running(bus_config(server.address, [cfg], rtu=False)) \
            as (_driver, _ctx, sink):
        await wait_until(lambda: len(states(sink, "4/ch2")) >= 3, "three proofs of life")
        stamps = [m.receive_ms for m in sink.measurements("4/ch2")]
        assert all(b - a >= 1000 for a, b in itertools.pairwise(stamps))
        assert set(states(sink, "4/ch2")) == {0.0}
        assert [r for r in sink.records if not isinstance(r, Measurement)] == []


@pytest.mark.parametrize(("closed", "expected"), [(True, []), (False, [False])])
async def test_a_condition_raised_before_a_restart_is_not_raised_again_or_forgotten(
        closed: bool, expected: Sequence[bool]) -> None:
    server = ContactServer((4,))
    server.devices[4].inputs[0] = not closed
    previous = frozenset({("modbus/b1/4/ch1", "valve_off_normal")})
    async with server.serving(), running(bus_config(server.address, [contacts(4, DI8)],
                                                    rtu=False), previous) as (_d, _c, sink):
        await wait_until(lambda: states(sink, "4/ch1"), "first poll")
        await wait_until(lambda: len(states(sink, "4/ch2")) >= 1, "settled")
        await asyncio.sleep(0)  # the poll's emit has returned
        assert sink.states("4/ch1", EventType.VALVE_OFF_NORMAL) == list(expected)


async def test_an_exception_reply_to_the_contact_read_is_a_device_error() -> None:
    server = ContactServer((4,))
    server.devices[4].exception = 2
    async with server.serving(), running(bus_config(server.address, [contacts(4, DI8)],
                                                    rtu=False)) as (_d, ctx, sink):
        await wait_until(lambda: sink.states("4", EventType.DEVICE_ERROR) == [True],
                         "device_error")
        detail = sink.events("4", EventType.DEVICE_ERROR)[0].detail
        assert detail == "exception 2 (illegal data address) reading discrete_input 0..7"
        assert states(sink, "4/ch1") == []  # nothing known, nothing reported
        server.devices[4].exception = None
        await wait_until(lambda: sink.states("4", EventType.DEVICE_ERROR) == [True, False],
                         "device_error cleared")
        await wait_until(lambda: states(sink, "4/ch1") == [0.0], "then the states")
        assert ctx.counters.get("exception_2") >= 1


async def test_a_change_the_outbox_refused_is_reported_at_the_next_poll() -> None:
    server = ContactServer((4,))
    di = server.devices[4].inputs
    di[0] = di[2] = True
    async with server.serving(), running(bus_config(server.address, [contacts(4, DI8)],
                                                    rtu=False)) as (driver, ctx, sink):
        await wait_until(lambda: states(sink, "4/ch1") == [1.0], "first state")
        sink.failing = True  # the outbox is full
        di[0] = False
        await wait_until(lambda: ctx.counters.get("emit_failed") >= 2, "two refused polls")
        assert sink.events("4/ch1", EventType.VALVE_OFF_NORMAL) == []
        sink.failing = False
        await wait_until(lambda: sink.states("4/ch1", EventType.VALVE_OFF_NORMAL) == [True],
                         "the raise, once the outbox takes it")
        await wait_until(lambda: states(sink, "4/ch1") == [1.0, 0.0], "and the new state")
        polls = driver.client.stats.by_unit[4]
        await wait_until(lambda: driver.client.stats.by_unit[4] >= polls + 3, "more polls")
        assert sink.states("4/ch1", EventType.VALVE_OFF_NORMAL) == [True]  # once
        assert states(sink, "4/ch1") == [1.0, 0.0]
