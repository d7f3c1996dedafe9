"""The Modbus driver against the real Modbus simulator, over Modbus TCP and RTU on a pty.

Two ways of running the simulator, both pymodbus's own server:

* ``firegate sim modbus`` as a subprocess (``tests/infra/simproc.py``), for the transports as
  the agent meets them: a pty it creates (RTU) or a TCP port, a port that appears late, a TCP
  server that goes away and comes back;
* the same server in-process on a manual clock (``simulators.modbus.server``), where a test
  must fault a device at a moment of its choosing (silence, exception, out of range, restore).

The driver's context is the real interface: ``emit`` appends to a list.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from edge.config.modbus import ModbusBusConfig, ModbusDeviceConfig
from edge.drivers.base import DriverContext, EmitRefused
from edge.drivers.modbus import ModbusDriver
from edge.drivers.modbus_adapter import BusClient, NoAnswer, Registers, TcpEndpoint
from protocols.registers import DeviceProfile, RegisterType, get_profile
from protocols.wire import Bus, Event, EventType, Measurement, Record
from simulators.modbus.model import Action, BusModel, ManualClock
from simulators.modbus.scenario import DeviceSpec, Scenario
from simulators.modbus.server import serve_rtu_pty, serve_tcp
from tests.infra.ports import free_port
from tests.infra.simproc import WAIT, simulator

BUS_NAME = "b1"

# One device of each built-in profile; initial values (canonical units) exercise scale, offset,
# sign, word order and a status bit (88.8 °C sets elec-fire's temperature_alarm).
SCENARIO = """
[modbus]
noise = 0.0
[[modbus.devices]]
id = 1
profile = "pressure-a"
initial = 0.412
[[modbus.devices]]
id = 2
profile = "pressure-b"
initial = 0.5234
[[modbus.devices]]
id = 3
profile = "pressure-c"
initial = 0.678912
[[modbus.devices]]
id = 4
profile = "level"
initial = 4.321
[[modbus.devices]]
id = 5
profile = "level-cm"
initial = 0.15
[[modbus.devices]]
id = 6
profile = "elec-fire"
[modbus.devices.initial]
residual_current = 123.0
temperature_1 = 21.5
temperature_2 = -5.3
temperature_3 = 88.8
temperature_4 = 30.0
"""
EXPECTED = {  # source id suffix -> (value, unit) in canonical units, as records carry them
    "1/pressure": (0.412, "MPa"), "2/pressure": (0.5234, "MPa"),
    "3/pressure": (0.678912, "MPa"), "4/level": (4.321, "m"), "5/level": (0.15, "m"),
    "6/residual_current": (123.0, "mA"), "6/temperature_1": (21.5, "°C"),
    "6/temperature_2": (-5.3, "°C"), "6/temperature_3": (88.8, "°C"),
    "6/temperature_4": (30.0, "°C"),
}
PROFILE_OF = {1: "pressure-a", 2: "pressure-b", 3: "pressure-c", 4: "level", 5: "level-cm",
              6: "elec-fire"}


class Sink:
    """The driver's ``emit``: keeps every record; can be told to fail like a full outbox."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.failing = False

    async def __call__(self, records: Sequence[Record]) -> None:
        if self.failing:
            raise EmitRefused("full", "outbox full")  # what the pipeline raises
        self.records.extend(records)

    def measurements(self, suffix: str) -> list[Measurement]:
        sid = f"modbus/{BUS_NAME}/{suffix}"
        return [r for r in self.records if isinstance(r, Measurement) and r.source.id == sid]

    def events(self, suffix: str, type: EventType) -> list[Event]:
        sid = f"modbus/{BUS_NAME}/{suffix}" if suffix else f"modbus/{BUS_NAME}"
        return [r for r in self.records
                if isinstance(r, Event) and r.source.id == sid and r.type is type]

    def states(self, suffix: str, type: EventType) -> list[bool]:
        return [e.active for e in self.events(suffix, type)]


def device(unit: int, profile: str | DeviceProfile, **kw: float) -> ModbusDeviceConfig:
    p = get_profile(profile) if isinstance(profile, str) else profile
    return ModbusDeviceConfig(unit=unit, name=f"dev-{unit}", profile=p,
                              interval_s=kw.get("interval_s", 0.2),
                              offline_after=int(kw.get("offline_after", 2)),
                              backoff_max_s=kw.get("backoff_max_s", 2.0))


def bus_config(address: str, devices: Sequence[ModbusDeviceConfig], *, rtu: bool,
               timeout_s: float = 0.25, reopen_max_s: float = 0.5) -> ModbusBusConfig:
    if rtu:
        return ModbusBusConfig(BUS_NAME, tuple(devices), port=address, timeout_s=timeout_s,
                               gap_ms=5.0, reopen_max_s=reopen_max_s)
    host, _, port = address.rpartition(":")
    return ModbusBusConfig(BUS_NAME, tuple(devices), host=host, tcp_port=int(port),
                           timeout_s=timeout_s, gap_ms=0.0, reopen_max_s=reopen_max_s)


@contextlib.asynccontextmanager
async def running(cfg: ModbusBusConfig, previous: frozenset[tuple[str, str]] = frozenset()
                  ) -> AsyncIterator[tuple[ModbusDriver, DriverContext, Sink]]:
    """The driver's run() as a task; cancelled at the end (it must still be running)."""
    sink = Sink()
    ctx = DriverContext(gateway_id="gw-test", emit=sink, previous=previous)
    driver = ModbusDriver(cfg, ctx)
    task = asyncio.create_task(driver.run(), name=driver.name)
    try:
        yield driver, ctx, sink
        assert not task.done(), "run() must serve until cancelled"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not driver.client.is_open  # closed on cancellation


async def wait_until(check: Callable[[], object], what: str) -> None:
    """Wait (generously: a loaded machine) until ``check()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def served(transport: str, specs: Sequence[DeviceSpec]
                 ) -> AsyncIterator[tuple[BusModel, str]]:
    """The simulator in-process on a manual clock; yields the bus and the client address."""
    bus = Scenario(tuple(specs), noise=0.0).build(ManualClock())
    server = serve_tcp(bus) if transport == "tcp" else serve_rtu_pty(bus, pace=False)
    async with server as run:
        yield bus, run.address


def spec(unit: int, profile: str, initial: float) -> DeviceSpec:
    p = get_profile(profile)
    return DeviceSpec(unit, p, f"sim-{unit}", {p.primary.name: initial})


# -- values and merged reads, against `firegate sim modbus` -----------------------------------

@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_values_of_every_profile_match_the_simulator(tmp_path: Path,
                                                           transport: str) -> None:
    scenario = tmp_path / "bus.toml"
    scenario.write_text(SCENARIO, "utf-8")
    where = ("--rtu", "--no-pace") if transport == "rtu" else ("--tcp", "127.0.0.1:0")
    async with simulator("modbus", *where, "--scenario", str(scenario)) as (proc, address):
        cfg = bus_config(address, [device(u, p) for u, p in PROFILE_OF.items()],
                         rtu=transport == "rtu")
        async with running(cfg) as (driver, ctx, sink):
            await wait_until(lambda: all(len(sink.measurements(s)) >= 3 for s in EXPECTED),
                             "three polls of every point")
            assert ctx.links.get(f"modbus/{BUS_NAME}") is not None
            for suffix, (value, unit) in EXPECTED.items():
                for m in sink.measurements(suffix):
                    assert m.value == pytest.approx(value, rel=1e-9), suffix
                    assert m.unit == unit
                    assert m.source.bus is Bus.MODBUS
                    assert m.source.description == f"dev-{suffix.split('/')[0]}"
                    assert m.seq == 0
            assert sink.measurements("2/pressure")[0].quantity.value == "pressure"
            # 88.8 °C on channel 3: the detector's own alarm bit, raised once
            assert sink.states("6/status/temperature_alarm", EventType.THRESHOLD_HIGH) == [True]
            assert sink.events("6/status/residual_current_alarm", EventType.THRESHOLD_HIGH) == []
            assert not any(isinstance(r, Event) and r.type is not EventType.THRESHOLD_HIGH
                           for r in sink.records)
            reads = driver.client.stats.by_unit
            counters = ctx.counters.snapshot()
        sent = driver.client.stats.requests
    # one request per device and poll: every built-in map is one block of adjacent registers
    # (elec-fire's six fields too). A poll cut by the cancellation may lack its records.
    for unit_id, key in PROFILE_OF.items():
        polls = len(sink.measurements(f"{unit_id}/{get_profile(key).primary.name}"))
        assert polls <= reads[unit_id] <= polls + 1, unit_id
    assert counters["reads"] == sum(reads.values()) == sent
    assert set(counters) == {"reads"}  # no timeouts, exceptions, range errors
    assert proc.stdout is not None
    stopped = re.search(r"stopped: (\d+) replies sent, (\d+) dropped",
                        (await proc.stdout.read()).decode())
    assert stopped is not None
    assert int(stopped[1]) == sent and int(stopped[2]) == 0  # the simulator saw the same


async def test_gaps_split_reads_and_adjacent_fields_merge() -> None:
    """A custom map with a gap costs two requests per poll, never one across the gap."""
    board = get_profile("elec-fire")
    split = DeviceProfile("split", "test", "elec-fire read around register 1",
                          points=(board.point("residual_current"),
                                  board.point("temperature_2"), board.point("temperature_3")),
                          status_words=())
    assert [(b.start, b.count) for b in split.read_blocks()] == [(0, 1), (2, 2)]
    specs = [DeviceSpec(6, board, "board", {"residual_current": 40.0, "temperature_2": 25.5,
                                            "temperature_3": 26.5})]
    async with served("tcp", specs) as (_bus, address), \
            running(bus_config(address, [device(6, split, interval_s=0.05)], rtu=False)
                    ) as (driver, ctx, sink):
        await wait_until(lambda: len(sink.measurements("6/temperature_3")) >= 5, "five polls")
        polls = len(sink.measurements("6/residual_current"))
        assert 2 * polls <= driver.client.stats.by_unit[6] <= 2 * polls + 2
        assert sink.measurements("6/temperature_2")[0].value == 25.5
        assert sink.measurements("6/residual_current")[0].value == 40.0
        assert ctx.counters.get("exception_2") == 0  # a bridged gap would be refused


# -- a silent device: offline once, back-off, neighbours unharmed, restore ---------------------

@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_silent_device_backs_off_and_neighbours_keep_their_rate(transport: str) -> None:
    interval, timeout = 0.25, 0.3
    async with served(transport, [spec(1, "pressure-a", 0.35), spec(2, "level", 3.0)]
                      ) as (bus, address):
        bus.trigger(2, Action.SILENCE)
        cfg = bus_config(address, [device(1, "pressure-a", interval_s=interval),
                                   device(2, "level", interval_s=interval, offline_after=2,
                                          backoff_max_s=2.0)],
                         rtu=transport == "rtu", timeout_s=timeout)
        async with running(cfg) as (driver, ctx, sink):
            await wait_until(lambda: sink.states("2", EventType.SENSOR_OFFLINE), "offline")
            link = ctx.links.get(f"modbus/{BUS_NAME}/2")
            assert link is not None and link.state.value == "down"
            # The neighbour over a window of its own polls, with the dead device present and
            # backing off. Counted in polls, not seconds: both devices run on the same clock,
            # so a loaded machine stretches the window without changing the ratio. (The rate
            # itself is a figure for bench/bench_modbus_driver.py, not an assert.)
            before = len(sink.measurements("1/pressure"))
            dead_before = driver.client.stats.by_unit[2]
            window = 16
            await wait_until(lambda: len(sink.measurements("1/pressure")) >= before + window,
                             f"{window} more polls of the live neighbour")
            dead_polls = driver.client.stats.by_unit[2] - dead_before
            # Without back-off the dead device is asked once per neighbour poll (same
            # interval), each ask a 0.3 s timeout in the neighbour's way: `window` asks. Backed
            # off towards 2 s (8 intervals) it is asked about 3 times in this window.
            assert dead_polls <= window // 3, dead_polls
            assert sink.states("2", EventType.SENSOR_OFFLINE) == [True]  # raised once
            assert ctx.counters.get("offline") == 1
            assert ctx.counters.get("timeout") >= 2
            assert driver.client.is_open and driver.client.stats.reconnects == 0
            assert ctx.links.get(f"modbus/{BUS_NAME}")
            # it answers again: restored at its next (backed-off) poll
            bus.trigger(2, Action.RESTORE)
            await wait_until(lambda: sink.states("2", EventType.SENSOR_OFFLINE) == [True, False],
                             "restore")
            link = ctx.links.get(f"modbus/{BUS_NAME}/2")
            assert link is not None and link.state.value == "up"
            await wait_until(lambda: sink.measurements("2/level"), "its values")
            assert sink.measurements("2/level")[-1].value == 3.0
            assert sink.events("1", EventType.SENSOR_OFFLINE) == []


async def test_a_lone_silent_device_does_not_drop_the_tcp_link() -> None:
    """pymodbus closes a TCP link after retries+3 unanswered requests; the adapter does not."""
    async with served("tcp", [spec(1, "pressure-a", 0.35), spec(2, "level", 3.0)]
                      ) as (bus, address):
        bus.trigger(2, Action.SILENCE)
        host, _, port = address.rpartition(":")
        # A short timeout keeps eight silent reads quick; the live device's answer may miss it
        # on a loaded machine, so that read is asked until it is answered (each ask counted).
        client = BusClient(TcpEndpoint(host, int(port)), timeout_s=0.1)
        await client.open()
        try:
            for _ in range(8):
                assert isinstance(await client.read(RegisterType.HOLDING, 2, 1, 2), NoAnswer)
            assert client.is_open and client.stats.reconnects == 0
            asks = 0
            deadline = asyncio.get_running_loop().time() + WAIT
            while True:
                asks += 1
                reply = await client.read(RegisterType.HOLDING, 0, 1, 1)
                if not isinstance(reply, NoAnswer) or asyncio.get_running_loop().time() > deadline:
                    break
            assert reply == Registers((350,))
            assert client.is_open and client.stats.reconnects == 0  # still the same link
            assert client.stats.requests == 8 + asks  # one frame per read, no hidden retries
        finally:
            client.close()


async def test_a_link_closed_between_reads_is_reopened_transparently() -> None:
    port = free_port()
    args = ("--tcp", f"127.0.0.1:{port}", "--device", "1:pressure-a=0.35", "--noise", "0")
    client = BusClient(TcpEndpoint("127.0.0.1", port), timeout_s=0.5)
    try:
        async with simulator("modbus", *args):
            await client.open()
            assert await client.read(RegisterType.HOLDING, 0, 1, 1) == Registers((350,))
        await wait_until(lambda: not client.is_open, "the peer's close seen")
        async with simulator("modbus", *args):
            assert await client.read(RegisterType.HOLDING, 0, 1, 1) == Registers((350,))
            assert client.stats.reconnects == 1 and client.is_open
    finally:
        client.close()


# -- exception replies, out-of-range values, status words --------------------------------------

@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_exception_replies_are_typed_counted_events(transport: str) -> None:
    async with served(transport, [spec(1, "pressure-a", 0.35), spec(2, "level", 3.0)]
                      ) as (bus, address):
        cfg = bus_config(address, [device(1, "pressure-a", interval_s=0.1),
                                   device(2, "level", interval_s=0.1)], rtu=transport == "rtu")
        async with running(cfg) as (_driver, ctx, sink):
            await wait_until(lambda: sink.measurements("1/pressure"), "first values")
            bus.trigger(1, Action.EXCEPTION, code=2)
            bus.trigger(2, Action.EXCEPTION, code=4)
            await wait_until(lambda: ctx.counters.get("exception_2") >= 3
                             and ctx.counters.get("exception_4") >= 3, "repeated exceptions")
            assert sink.states("1", EventType.DEVICE_ERROR) == [True]  # once per condition
            (raised,) = sink.events("2", EventType.DEVICE_ERROR)
            assert raised.detail == "exception 4 (server device failure) reading holding 2..2"
            assert ctx.counters.get("timeout") == 0
            link = ctx.links.get(f"modbus/{BUS_NAME}/1")
            assert link is not None and link.state.value == "up"  # it answers: not offline
            assert sink.events("1", EventType.SENSOR_OFFLINE) == []
            # Nothing to measure while it answers with exceptions: proven over polls that were
            # made (three more exception replies), not over a quiet time that proves nothing.
            count = len(sink.measurements("1/pressure"))
            asked = ctx.counters.get("exception_2")
            await wait_until(lambda: ctx.counters.get("exception_2") >= asked + 3,
                             "three more polls of device 1")
            assert len(sink.measurements("1/pressure")) == count
            bus.trigger(1, Action.RESTORE)
            bus.trigger(2, Action.RESTORE)
            await wait_until(lambda: sink.states("1", EventType.DEVICE_ERROR) == [True, False]
                             and sink.states("2", EventType.DEVICE_ERROR) == [True, False],
                             "restores")
            await wait_until(lambda: len(sink.measurements("1/pressure")) > count, "values")


async def test_out_of_range_is_an_event_and_not_a_measurement() -> None:
    async with served("tcp", [spec(1, "pressure-a", 0.35)]) as (bus, address), \
            running(bus_config(address, [device(1, "pressure-a", interval_s=0.1)], rtu=False)
                    ) as (_driver, ctx, sink):
        await wait_until(lambda: sink.measurements("1/pressure"), "first values")
        bus.trigger(1, Action.OUT_OF_RANGE)  # 1.5 spans above 0..1.6 MPa: 4.0 MPa
        await wait_until(lambda: ctx.counters.get("out_of_range") >= 3, "out-of-range reads")
        (raised,) = sink.events("1/pressure", EventType.OUT_OF_RANGE)
        assert (raised.active, raised.value, raised.limit) == (True, 4.0, 1.6)
        assert raised.detail == "pressure 4 MPa outside 0..1.6 MPa"
        assert all(m.value == 0.35 for m in sink.measurements("1/pressure"))
        # the transmitter's own over_range status bit is a fault event too
        assert sink.states("1/status/over_range", EventType.FAULT) == [True]
        bus.trigger(1, Action.RESTORE)
        await wait_until(lambda: sink.states("1/pressure", EventType.OUT_OF_RANGE)
                         == [True, False], "restore")
        assert sink.events("1/pressure", EventType.OUT_OF_RANGE)[-1].value == 0.35
        await wait_until(lambda: sink.states("1/status/over_range", EventType.FAULT)
                         == [True, False], "fault restore")


async def test_fault_bits_raise_faults_and_hold_back_the_values_they_cover() -> None:
    async with served("tcp", [spec(6, "elec-fire", 20.0), spec(2, "pressure-b", 0.4)]
                      ) as (bus, address), \
            running(bus_config(address, [device(6, "elec-fire", interval_s=0.1),
                                         device(2, "pressure-b", interval_s=0.1)], rtu=False)
                    ) as (_driver, ctx, sink):
        await wait_until(lambda: sink.measurements("2/pressure"), "first values")
        bus.trigger(6, Action.SENSOR_FAULT)
        bus.trigger(2, Action.SENSOR_FAULT)
        await wait_until(lambda: sink.states("2/status/loop_open", EventType.FAULT), "faults")
        await wait_until(lambda: sink.states("6/status/temperature_fault", EventType.FAULT),
                         "faults")
        assert sink.states("6/status/residual_current_fault", EventType.FAULT) == [True]
        assert sink.states("2/status/sensor_fault", EventType.FAULT) == [True]
        held = {s: len(sink.measurements(s)) for s in ("6/temperature_1", "2/pressure")}
        await wait_until(lambda: ctx.counters.get("fault_suppressed") >= 20, "held values")
        assert {s: len(sink.measurements(s)) for s in held} == held
        bus.trigger(6, Action.RESTORE)
        bus.trigger(2, Action.RESTORE)
        await wait_until(lambda: sink.states("2/status/loop_open", EventType.FAULT)
                         == [True, False], "restore")
        await wait_until(lambda: len(sink.measurements("6/temperature_1")) > held[
            "6/temperature_1"], "values again")


async def test_emit_failures_are_counted_and_events_sent_later() -> None:
    async with served("tcp", [spec(1, "pressure-a", 0.35)]) as (bus, address), \
            running(bus_config(address, [device(1, "pressure-a", interval_s=0.1)], rtu=False)
                    ) as (_driver, ctx, sink):
        await wait_until(lambda: sink.measurements("1/pressure"), "first values")
        sink.failing = True
        bus.trigger(1, Action.EXCEPTION, code=6)
        await wait_until(lambda: ctx.counters.get("emit_failed") >= 3, "failed emits")
        assert sink.events("1", EventType.DEVICE_ERROR) == []
        sink.failing = False
        await wait_until(lambda: sink.events("1", EventType.DEVICE_ERROR), "late event")
        # Delivered exactly once: over three more polls of the same condition nothing repeats
        # it, and the restore that follows on the same channel arrives right after it.
        asked = ctx.counters.get("exception_6")
        await wait_until(lambda: ctx.counters.get("exception_6") >= asked + 3, "more polls")
        assert sink.states("1", EventType.DEVICE_ERROR) == [True]
        bus.trigger(1, Action.RESTORE)
        await wait_until(lambda: sink.states("1", EventType.DEVICE_ERROR) != [True], "restore")
        assert sink.states("1", EventType.DEVICE_ERROR) == [True, False]


# -- the bus link: a port that is missing at start, a TCP server that goes away ---------------

async def test_missing_port_is_a_link_fault_and_the_driver_recovers(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    cfg = bus_config(str(link), [device(1, "pressure-a")], rtu=True)
    async with running(cfg) as (driver, ctx, sink):
        await wait_until(lambda: ctx.counters.get("open_failed") >= 2, "failed opens")
        info = ctx.links.get(f"modbus/{BUS_NAME}")
        assert info is not None and info.state.value == "down"
        assert info.detail == f"cannot open {link}: no such device"
        unit = ctx.links.get(f"modbus/{BUS_NAME}/1")
        assert unit is not None and (unit.state.value, unit.detail) == ("down", "bus down")
        assert sink.states("", EventType.LINK_FAULT) == [True]  # raised once
        async with simulator("modbus", "--rtu", "--no-pace", "--link", str(link),
                             "--device", "1:pressure-a=0.5", "--noise", "0"):
            await wait_until(lambda: sink.measurements("1/pressure"), "values")
            assert sink.measurements("1/pressure")[0].value == 0.5
            assert sink.states("", EventType.LINK_FAULT) == [True, False]
            info = ctx.links.get(f"modbus/{BUS_NAME}")
            assert info is not None and info.state.value == "up"
            assert ctx.counters.get("reopen") == 1
            assert driver.client.is_open
            unit = ctx.links.get(f"modbus/{BUS_NAME}/1")
            assert unit is not None and unit.state.value == "up"
            assert sink.events("1", EventType.SENSOR_OFFLINE) == []
        # the pty goes away under the running driver (a USB adapter pulled), then comes back
        await wait_until(lambda: sink.states("", EventType.LINK_FAULT) == [True, False, True],
                         "link fault again")
        assert ctx.counters.get("link_lost") == 1
        async with simulator("modbus", "--rtu", "--no-pace", "--link", str(link),
                             "--device", "1:pressure-a=0.6", "--noise", "0"):
            await wait_until(lambda: sink.measurements("1/pressure")[-1].value == 0.6,
                             "values from the new line")
            assert sink.states("", EventType.LINK_FAULT) == [True, False, True, False]
            assert ctx.counters.get("reopen") == 2


async def test_tcp_server_gone_and_back() -> None:
    port = free_port()
    args = ("--tcp", f"127.0.0.1:{port}", "--device", "1:level=2.5", "--noise", "0")
    cfg = bus_config(f"127.0.0.1:{port}", [device(1, "level", interval_s=0.1)], rtu=False)
    async with running(cfg) as (driver, ctx, sink):
        await wait_until(lambda: ctx.counters.get("open_failed") >= 1, "refused")
        assert sink.states("", EventType.LINK_FAULT) == [True]
        async with simulator("modbus", *args):
            await wait_until(lambda: sink.measurements("1/level"), "values")
            assert sink.measurements("1/level")[0].value == 2.5
            assert sink.states("", EventType.LINK_FAULT) == [True, False]
        # the server went away while the driver was serving: down, raised again, retried
        await wait_until(lambda: sink.states("", EventType.LINK_FAULT) == [True, False, True],
                         "link fault")
        info = ctx.links.get(f"modbus/{BUS_NAME}")
        assert info is not None and info.state.value == "down"
        assert ctx.counters.get("link_lost") + ctx.counters.get("open_failed") >= 2
        async with simulator("modbus", *args):
            seen = len(sink.measurements("1/level"))
            await wait_until(lambda: len(sink.measurements("1/level")) > seen, "values again")
            assert sink.states("", EventType.LINK_FAULT) == [True, False, True, False]
            assert ctx.counters.get("reopen") == 2
        assert driver.name == "modbus/b1" and driver.commands() == {}


async def test_cancellation_always_ends_the_bus_task() -> None:
    """Cancelled at any moment - even as an answer arrives - run() ends and closes the port.

    Python 3.11's ``asyncio.wait_for`` (used inside pymodbus) swallows a cancellation that
    races the awaited answer; the adapter re-raises it (``Task.cancelling()``).
    """
    args = ("--tcp", "127.0.0.1:0", "--device", "1:pressure-a", "--device", "2:elec-fire")
    async with simulator("modbus", *args) as (_proc, address):
        cfg = bus_config(address, [device(1, "pressure-a", interval_s=0.0),
                                   device(2, "elec-fire", interval_s=0.0)], rtu=False)
        for i in range(40):
            ctx = DriverContext(gateway_id="gw-test", emit=Sink())
            driver = ModbusDriver(cfg, ctx)
            task = asyncio.create_task(driver.run())
            while ctx.counters.get("reads") < 5 + i:  # polling flat out
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=WAIT)
            assert task in done, f"run() ignored its cancellation (round {i})"
            assert task.cancelled()
            assert not driver.client.is_open


# -- after a restart: state seeded from the conditions raised at the last stop -----------------

async def test_after_a_restart_cleared_conditions_are_restored_once_and_none_raised_twice(
        ) -> None:
    bus_id = f"modbus/{BUS_NAME}"
    previous = frozenset({
        (bus_id, "link_fault"),  # the server was away at the last stop, and still is
        (f"{bus_id}/1", "sensor_offline"), (f"{bus_id}/1", "device_error"),  # all cleared
        (f"{bus_id}/1/pressure", "out_of_range"), (f"{bus_id}/1/status/sensor_fault", "fault"),
        (f"{bus_id}/2", "sensor_offline"),  # still silent
        (f"{bus_id}/3/pressure", "out_of_range"), (f"{bus_id}/3/status/over_range", "fault"),
        (f"{bus_id}/3", "device_error"),  # out of range still, but answering normally
        ("modbus/other/1", "sensor_offline"), (f"{bus_id}x/1", "device_error"),  # not ours
    })
    port = free_port()
    bus = Scenario((spec(1, "pressure-a", 0.35), spec(2, "level", 3.0),
                    spec(3, "pressure-a", 0.4)), noise=0.0).build(ManualClock())
    bus.trigger(2, Action.SILENCE)
    bus.trigger(3, Action.OUT_OF_RANGE)
    cfg = bus_config(f"127.0.0.1:{port}", [device(u, "pressure-a" if u != 2 else "level",
                                                  interval_s=0.1) for u in (1, 2, 3)],
                     rtu=False)
    async with running(cfg, previous) as (_driver, ctx, sink):
        await wait_until(lambda: ctx.counters.get("open_failed") >= 2, "refused opens")
        assert sink.records == []  # the bus's link fault is not raised a second time
        async with serve_tcp(bus, port=port):
            await wait_until(lambda: sink.events("", EventType.LINK_FAULT), "bus restore")
            await wait_until(lambda: ctx.counters.get("timeout") >= 4, "device 2 offline again")
            await wait_until(lambda: len(sink.measurements("1/pressure")) >= 3, "polls")
            events = [(e.source.id.removeprefix(bus_id), e.type, e.active)
                      for e in sink.records if isinstance(e, Event)]
    assert sorted(events) == sorted([
        ("", EventType.LINK_FAULT, False),
        ("/1", EventType.SENSOR_OFFLINE, False), ("/1", EventType.DEVICE_ERROR, False),
        ("/1/pressure", EventType.OUT_OF_RANGE, False),
        ("/1/status/sensor_fault", EventType.FAULT, False),
        ("/3", EventType.DEVICE_ERROR, False),
    ])
    assert sink.measurements("1/pressure")[0].value == 0.35
    assert sink.measurements("3/pressure") == []  # out of range: no values, no new event
    assert ctx.counters.get("offline") == 0  # device 2 went offline before the restart
    link = ctx.links.get(f"{bus_id}/2")
    assert link is not None and link.state.value == "down"
