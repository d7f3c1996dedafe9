"""The firmware reads coils (FC1) and discrete inputs (FC2) over Modbus RTU on a pty.

Real MicroPython (unix port, 100 KB heap) polls the Modbus simulator over RTU (CRC-16 framing,
the pty the simulator creates) and publishes over TLS to Mosquitto. The bus holds a valve
monitor (discrete inputs) and a fan controller of a custom profile declared in the site file,
whose run and fault relays are coils straddling a 16-bit boundary. The simulator serves the
very profile the agent's config loader made of the site file. A valve closed with contact
bounce is one event; the fan's relays are two more.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

from firegate.provision import load_site
from protocols.registers import get_profile
from protocols.wire import Event, Measurement, Quantity, Record
from simulators.modbus.model import Action, ScaledClock
from simulators.modbus.scenario import DeviceSpec, Scenario
from simulators.modbus.server import serve_rtu_pty

from .helpers import WAIT, Collector, ProvisionedBroker, every, make_node

BUS = """
[[modbus]]
name = "rs485"
port = "{port}"
timeout_s = 0.3

[[modbus.device]]
unit = 8
profile = "valve-4"
name = "riser valves"
interval_s = 0.2
debounce_ms = 800
report_interval_s = 1

[[modbus.device]]
unit = 12
profile = "fan_ctl"
name = "smoke exhaust fan 1"
interval_s = 0.2
debounce_ms = 200

[modbus_profiles.fan_ctl]
model = "fan controller, relay feedback as coils"
bit_gap = 1

[[modbus_profiles.fan_ctl.contact]]
name = "run"
meaning = "run"
table = "coil"
address = 15
channel = 1

[[modbus_profiles.fan_ctl.contact]]
name = "trip"
meaning = "fault"
table = "coil"
address = 16
channel = 2
"""


def events(records: list[Record]) -> dict[str, list[tuple[str, bool, int, str | None]]]:
    out: dict[str, list[tuple[str, bool, int, str | None]]] = {}
    for r in records:
        if isinstance(r, Event) and r.type.value in ("valve_off_normal", "running", "fault"):
            out.setdefault(r.source.id.removeprefix("modbus/rs485/"), []).append(
                (r.type.value, r.active, int(r.priority), r.detail))
    return out


async def test_the_firmware_reads_coils_and_inputs_over_rtu(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    clock = ScaledClock(1.0)
    placeholder = tmp_path / "probe"
    placeholder.write_text(f'[site]\nid = "s"\n[uplink]\nurl = "mqtt://127.0.0.1:1"\n'
                           f'{BUS.format(port="/dev/null")}')
    fan = load_site(placeholder).buses[0].devices[1].profile  # the agent's loader made it
    assert [b.table.value for b in fan.bit_points] == ["coil", "coil"]
    bus = Scenario((DeviceSpec(8, get_profile("valve-4"), "riser valves"),
                    DeviceSpec(12, fan, "smoke exhaust fan 1")), noise=0.0).build(clock)
    async with serve_rtu_pty(bus, pace=False) as running:
        node, prov = make_node(tmp_path, fw_build, broker, BUS.format(port=running.address))
        broker.start()
        col = Collector(broker, prov.credentials.gateway_id)
        node.start()

        async def until(what: str, check: object) -> list[Record]:
            deadline = time.monotonic() + WAIT
            while True:
                got = list(every(col.records()))
                if callable(check) and check(got):
                    return got
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out waiting for {what}: {events(got)}\n"
                                         f"{node.log()[-3000:]}")
                await asyncio.sleep(0.05)

        try:
            await until("the first states", lambda got: {
                r.source.id for r in got if isinstance(r, Measurement)
                and r.quantity is Quantity.STATE} >= {
                    "modbus/rs485/8/valve_1", "modbus/rs485/12/run", "modbus/rs485/12/trip"})
            bus.trigger(8, Action.VALVE_CLOSE, point="valve_3", bounce=3, bounce_s=0.1)
            bus.trigger(12, Action.PUMP_START)  # the fan's run relay closes
            await until("the valve closed, the fan running", lambda got: (
                "8/valve_3" in events(got) and "12/run" in events(got)))
            bus.trigger(12, Action.PUMP_FAULT)  # it trips: fault on, run off
            got = await until("the fan tripped", lambda got: (
                len(events(got).get("12/run", [])) == 2 and "12/trip" in events(got)))
            settled = bus.devices[8].contacts["valve_3"].settled_at
            while clock.now() < settled + 1.5:  # a late, second valve event would show now
                await asyncio.sleep(0.05)
            got = await until("three proofs of life of valve 1", lambda got: len(
                [r for r in got if isinstance(r, Measurement)
                 and r.source.id == "modbus/rs485/8/valve_1"]) >= 3)
        finally:
            node.kill()
            col.close()
    assert events(got) == {
        "8/valve_3": [("valve_off_normal", True, 1, "channel 3: closed (normal: open)")],
        "12/run": [("running", True, 2, "channel 1: running (normal: stopped)"),
                   ("running", False, 2, "channel 1: stopped (normal: stopped)")],
        "12/trip": [("fault", True, 1, "channel 2: fault (normal: ok)")],
    }
    # report_interval_s = 1: an unchanged contact's state is sent again every second or so
    alive = [r.receive_ms for r in got if isinstance(r, Measurement)
             and r.source.id == "modbus/rs485/8/valve_1"]
    assert all(b - a >= 1000 for a, b in itertools.pairwise(alive)), alive
    assert {r.value for r in got if isinstance(r, Measurement)
            and r.source.id == "modbus/rs485/8/valve_1"} == {1.0}
    assert not col.errors
    assert "MemoryError" not in node.log()
    assert int(running.stats.sent) > 0
