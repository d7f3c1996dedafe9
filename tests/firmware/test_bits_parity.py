"""Contacts: the same simulated changes give the same events from the firmware as from the agent.

One Modbus simulator (pymodbus's server, in this process, on a real-time clock) serves a valve
monitor, a fire pump controller (contacts packed in a register, one wired inverted; its pressure
switch on its own outlet) and a DI-8 module whose channels the gateway config assigns. Two
masters poll it at once over Modbus TCP:

* the edge agent's Modbus driver (``edge.drivers.modbus``), configured from the site file by
  the agent's own loader;
* the firmware in real MicroPython (unix port, 100 KB heap), its ``config.json`` provisioned
  from the same site file, publishing over TLS to Mosquitto; a paho collector decodes every
  batch strictly.

The test changes contacts one step at a time (a valve closed with contact bounce, a hydrant
opened so that the pump starts on the pressure drop, the pump tripping, the selector turned to
manual, DI-module inputs closing, the valve reopened with bounce) and waits, each time, until
both have reported. Then the contact events of both - source, type, raise/clear, priority and
text - must be equal, and the expected ones: one raise and one clear for each bouncing valve,
nothing for the bounces themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from edge.drivers.base import DriverContext
from edge.drivers.modbus import ModbusDriver
from firegate.provision import load_site
from protocols.registers import MEANINGS, Meaning, get_profile
from protocols.wire import Event, Measurement, Quantity, Record
from simulators.modbus.model import Action, AutoStart, BusModel, ScaledClock
from simulators.modbus.scenario import DeviceSpec, Scenario
from simulators.modbus.server import serve_tcp

from .helpers import WAIT, Collector, ProvisionedBroker, every, make_node

BUS = "rs485"
DEVICES = (
    DeviceSpec(7, get_profile("di-8"), "di-module"),
    DeviceSpec(8, get_profile("valve-4"), "valves"),
    DeviceSpec(9, get_profile("fire-pump"), "pump-1", {"outlet_pressure": 0.35,
                                                         "inlet_pressure": 0.05},
               auto_start=AutoStart(9, 0.25)),  # the switch on its own outlet
)


def bus_toml(address: str) -> str:
    host, port = address.rsplit(":", 1)
    return f"""
[[modbus]]
name = "{BUS}"
host = "{host}"
tcp_port = {port}
timeout_s = 0.5

[[modbus.device]]
unit = 7
profile = "di-8"
name = "B1 DI"
interval_s = 0.2
debounce_ms = 400
channels.1 = "valve:B1 drain valve"
channels.2 = {{ meaning = "door", description = "B1 fire door", invert = true }}

[[modbus.device]]
unit = 8
profile = "valve-4"
name = "riser valves"
interval_s = 0.2
debounce_ms = 1000

[[modbus.device]]
unit = 9
profile = "fire-pump"
name = "fire pump 1"
interval_s = 0.2
debounce_ms = 300
"""


CONTACTS = {f"modbus/{BUS}/{s}" for s in (
    "7/ch1", "7/ch2", "8/valve_1", "8/valve_2", "8/valve_3", "8/valve_4", "9/run", "9/fault",
    "9/manual")}
def text(meaning: Meaning, channel: int, state: bool) -> str:
    """The agent's event text (docs/modbus-contacts.md), state names from ``MEANINGS``."""
    spec = MEANINGS[meaning]
    return (f"channel {channel}: {spec.state_name(state)} "
            f"(normal: {spec.state_name(spec.normal)})")


# What both must report, per contact: (type, active, priority, text), in order.
V, R, F, MN, D = Meaning.VALVE, Meaning.RUN, Meaning.FAULT, Meaning.MANUAL, Meaning.DOOR
EXPECTED = {
    "7/ch1": [("valve_off_normal", True, 1, text(V, 1, False)),
              ("valve_off_normal", False, 1, text(V, 1, True))],
    "7/ch2": [("door_open", True, 1, text(D, 2, True)),
              ("door_open", False, 1, text(D, 2, False))],
    "8/valve_2": [("valve_off_normal", True, 1, text(V, 2, False)),
                  ("valve_off_normal", False, 1, text(V, 2, True))],
    "9/run": [("running", True, 2, text(R, 1, True)), ("running", False, 2, text(R, 1, False))],
    "9/fault": [("fault", True, 1, text(F, 2, True))],
    "9/manual": [("manual_mode", True, 2, text(MN, 3, True))],
}
EventKey = tuple[str, bool, int, str | None]


def contact_events(records: Sequence[Record]) -> dict[str, list[EventKey]]:
    out: dict[str, list[EventKey]] = {}
    for r in records:
        if isinstance(r, Event) and r.source.id in CONTACTS:
            key = r.source.id.removeprefix(f"modbus/{BUS}/")
            out.setdefault(key, []).append((r.type.value, r.active, int(r.priority), r.detail))
    return out


def state_changes(records: Sequence[Record]) -> dict[str, list[float]]:
    """Each contact's ``state`` measurements with repeats (proof of life) folded."""
    out: dict[str, list[float]] = {}
    for r in records:
        if isinstance(r, Measurement) and r.quantity is Quantity.STATE:
            seq = out.setdefault(r.source.id.removeprefix(f"modbus/{BUS}/"), [])
            if not seq or seq[-1] != r.value:
                seq.append(r.value)
    return out


def descriptions(records: Sequence[Record]) -> dict[str, str | None]:
    return {r.source.id: r.source.description for r in records if r.source.id in CONTACTS}


@contextlib.asynccontextmanager
async def agent(address: str, site: Path) -> AsyncIterator[list[Record]]:
    """The agent's Modbus driver on the bus the site file describes (the agent's loader)."""
    cfg = load_site(site).buses[0]
    assert cfg.endpoint.endswith(address.rsplit(":", 1)[1])
    records: list[Record] = []

    async def emit(batch: Sequence[Record]) -> None:
        records.extend(batch)

    driver = ModbusDriver(cfg, DriverContext(gateway_id="gw-agent", emit=emit))
    task = asyncio.create_task(driver.run(), name=driver.name)
    try:
        yield records
        assert not task.done(), "the driver must serve until cancelled"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def both(what: str, agent_records: list[Record], col: Collector,
               predicate: Callable[[Sequence[Record]], bool]) -> None:
    """Wait (polling, generous deadline) until the predicate holds for both masters."""
    deadline = time.monotonic() + WAIT
    while True:
        fw = list(every(col.records()))
        if predicate(agent_records) and predicate(fw):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\nagent "
                                 f"{contact_events(agent_records)}\nfirmware "
                                 f"{contact_events(fw)}\ncollector errors {col.errors[:3]}")
        await asyncio.sleep(0.05)


def has(key: str, n: int) -> Callable[[Sequence[Record]], bool]:
    return lambda records: len(contact_events(records).get(key, [])) >= n


async def test_the_firmware_reports_contacts_as_the_agent_does(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    bus: BusModel = Scenario(DEVICES, noise=0.0).build(ScaledClock(1.0))
    async with serve_tcp(bus) as running:
        node, prov = make_node(tmp_path, fw_build, broker, bus_toml(running.address))
        broker.start()
        col = Collector(broker, prov.credentials.gateway_id)
        node.start()
        try:
            async with agent(running.address, tmp_path / "site.toml") as agent_records:
                # first states: the DI module's drain valve reads closed, its door open
                await both("the first states", agent_records, col, lambda r: (
                    len(state_changes(r)) == len(CONTACTS) and has("7/ch2", 1)(r)))
                bus.trigger(8, Action.VALVE_CLOSE, point="valve_2", bounce=3, bounce_s=0.15)
                await both("valve 2 closed", agent_records, col, has("8/valve_2", 1))
                bus.trigger(9, Action.HYDRANT_OPEN)  # the pressure switch starts the pump
                await both("the pump running", agent_records, col, has("9/run", 1))
                bus.trigger(9, Action.PUMP_FAULT)
                await both("the pump tripped", agent_records, col,
                           lambda r: has("9/fault", 1)(r) and has("9/run", 2)(r))
                bus.trigger(9, Action.MANUAL)
                bus.trigger(7, Action.CONTACT, point="ch1", state="closed")
                bus.trigger(7, Action.CONTACT, point="ch2", state="closed")
                await both("manual, DI inputs closed", agent_records, col, lambda r: (
                    has("9/manual", 1)(r) and has("7/ch1", 2)(r) and has("7/ch2", 2)(r)))
                bus.trigger(8, Action.VALVE_OPEN, point="valve_2", bounce=2, bounce_s=0.15)
                await both("valve 2 open again", agent_records, col, has("8/valve_2", 2))
                fw = list(every(col.records()))
                agent_seen = list(agent_records)
        except BaseException:
            print("node output:\n" + node.log()[-5000:])
            raise
        finally:
            node.kill()
            col.close()
    assert contact_events(agent_seen) == EXPECTED
    assert contact_events(fw) == EXPECTED
    assert state_changes(fw) == state_changes(agent_seen) == {
        "7/ch1": [0.0, 1.0], "7/ch2": [1.0, 0.0], "8/valve_1": [1.0], "8/valve_2": [1.0, 0.0, 1.0],
        "8/valve_3": [1.0], "8/valve_4": [1.0], "9/run": [0.0, 1.0, 0.0], "9/fault": [0.0, 1.0],
        "9/manual": [0.0, 1.0]}
    assert descriptions(fw) == descriptions(agent_seen)
    assert descriptions(fw)[f"modbus/{BUS}/7/ch1"] == "B1 drain valve"
    assert not col.errors
    assert "MemoryError" not in node.log()
