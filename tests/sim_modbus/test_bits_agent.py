"""The real agent (``firegate agent run``) against the Modbus simulator's contacts, end to end.

The simulator (pymodbus's server, in this process, on a real-time clock) serves a valve monitor
and a DI module; the agent, a subprocess with its real config loader, driver, pipeline and
outbox, polls them over Modbus TCP. The test closes a supply valve whose position switch
bounces (two returns to "open", a second each) and, at the same moment, opens a DI-module input
with the same bounce. The valve monitor is debounced (2.5 s, longer than any bounce): one
``valve_off_normal`` in the outbox, durable. The DI input is not (``debounce_ms = 0``): every
bounce the agent sees is an event, which shows the bounce really was on the wire.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from protocols.registers import get_profile
from protocols.wire import (
    Event,
    EventType,
    Measurement,
    Priority,
    Quantity,
    Record,
    decode_batch,
    encode_batch_from_encoded,
)
from simulators.modbus.model import Action, ScaledClock
from simulators.modbus.scenario import DeviceSpec, Scenario
from simulators.modbus.server import serve_tcp
from tests.edge.agent_rig import agent, agent_config, until

GW = "gw-sim-bits"
DEVICES = """
[[modbus.device]]
unit = 8
profile = "valve-4"
name = "riser valves"
interval_s = 0.1
debounce_ms = 2500

[[modbus.device]]
unit = 7
profile = "di-8"
name = "B1 DI"
interval_s = 0.1
debounce_ms = 0
channels.1 = "valve:B1 drain valve"
"""


def outbox_records(tmp: Path) -> list[Record]:
    """Every record the agent's outbox holds (read-only: the agent is running)."""
    path = tmp / "data" / "outbox.db"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = [bytes(p) for (p,) in db.execute("SELECT payload FROM outbox ORDER BY seq")]
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        db.close()
    return list(decode_batch(encode_batch_from_encoded(GW, None, 0, rows)).records) if rows \
        else []


def events(tmp: Path, source: str) -> list[Event]:
    return [r for r in outbox_records(tmp) if isinstance(r, Event)
            and r.source.id == f"modbus/bus1/{source}" and r.type is EventType.VALVE_OFF_NORMAL]


def states(tmp: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in outbox_records(tmp):
        if isinstance(r, Measurement) and r.quantity is Quantity.STATE:
            out.setdefault(r.source.id.removeprefix("modbus/bus1/"), []).append(r.value)
    return out


async def test_a_bouncing_valve_switch_is_one_event_in_the_agents_outbox(tmp_path: Path) -> None:
    bus = Scenario((DeviceSpec(8, get_profile("valve-4"), "riser valves"),
                    DeviceSpec(7, get_profile("di-8"), "B1 DI", contacts={"ch1": "closed"})),
                   noise=0.0).build(ScaledClock(1.0))
    async with serve_tcp(bus) as running:
        host, _, port = running.address.rpartition(":")
        config = agent_config(tmp_path, gw=GW, broker_port=None, modbus=(host, int(port)),
                              devices=DEVICES)
        async with agent(config):
            await until(lambda: {"8/valve_1", "8/valve_2", "8/valve_3", "8/valve_4",
                                 "7/ch1"} <= set(states(tmp_path)),
                        "the first state of every contact in the outbox")
            assert not events(tmp_path, "8/valve_2") and not events(tmp_path, "7/ch1")
            bus.trigger(8, Action.VALVE_CLOSE, point="valve_2", bounce=2, bounce_s=1.0)
            bus.trigger(7, Action.CONTACT, point="ch1", state="open", bounce=2, bounce_s=1.0)
            await until(lambda: bool(events(tmp_path, "8/valve_2"))
                        and [e.active for e in events(tmp_path, "7/ch1")][-1:] == [True]
                        and len(events(tmp_path, "7/ch1")) >= 3,
                        "the debounced valve event, and the undebounced input's bounces")
            settled = bus.devices[8].contacts["valve_2"].settled_at
            await until(lambda: bus.clock.now() > settled + 3.0, "the valve settled for 3 s")
            valve = events(tmp_path, "8/valve_2")
            bouncing = [e.active for e in events(tmp_path, "7/ch1")]
            valve_states = states(tmp_path)["8/valve_2"]
    assert [e.active for e in valve] == [True]  # one event for the bouncing valve switch
    (closed,) = valve
    assert closed.priority is Priority.ALARM
    assert closed.detail == "channel 2: closed (normal: open)"
    described = get_profile("valve-4").bit_point("valve_2").description
    assert closed.source.description == f"riser valves {described}"  # the device's name first
    # the accepted state changed once: 1 (open) ... then 0 (closed), never back
    assert valve_states[0] == 1.0 and valve_states[-1] == 0.0
    assert valve_states.index(0.0) == len(valve_states) - valve_states[::-1].index(1.0)
    # without debounce the same bounce is three raises and two restores (or, on a machine
    # stalled for a whole second, fewer - but never a single event)
    assert bouncing[0] is True and bouncing[-1] is True and len(bouncing) >= 3
    assert bouncing == [i % 2 == 0 for i in range(len(bouncing))]
