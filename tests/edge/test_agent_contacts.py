"""The real agent (``firegate agent run``) reading contacts from a real Modbus TCP server,
through its pipeline into the outbox and the local view: a supply valve closed on a DI module
and a fire pump controller's run / manual bits become the records docs/modbus-contacts.md
describes, durable in ``outbox.db``."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

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

from .agent_rig import agent, agent_config, firegate_json, until
from .modbus_bits_rig import ContactServer

GW = "gw-contacts"
DEVICES = """
[[modbus.device]]
unit = 4
name = "B1 pump room DI"
profile = "di-8"
interval_s = 0.1
debounce_ms = 300
channels.1 = "valve:B1 wet riser supply valve"
channels.2 = { meaning = "fault", description = "fire pump 1 trip", invert = true }

[[modbus.device]]
unit = 9
name = "fire pump 1"
profile = "fire-pump"
interval_s = 0.1
debounce_ms = 0
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
    if not rows:
        return []
    return list(decode_batch(encode_batch_from_encoded(GW, None, 0, rows)).records)


def conditions(tmp: Path) -> set[tuple[str, str]]:
    """The conditions the agent's local state holds (what a restart starts from)."""
    path = tmp / "data" / "state.db"
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {(str(a), str(b)) for a, b in db.execute("SELECT source_id, type FROM conditions")}
    except sqlite3.OperationalError:  # the schema is not there yet
        return set()
    finally:
        db.close()


def events(tmp: Path, source: str, kind: EventType) -> list[Event]:
    return [r for r in outbox_records(tmp) if isinstance(r, Event)
            and r.source.id == f"modbus/bus1/{source}" and r.type is kind]


async def test_contacts_reach_the_outbox_and_the_local_view(tmp_path: Path) -> None:
    server = ContactServer((4, 9))
    di = server.devices[4].inputs
    di[0] = di[1] = True  # valve open, trip relay energised: all normal
    server.devices[9].holding[:3] = [650, 10, 0b100]  # auto, stopped, healthy
    async with server.serving():
        host, _, port = server.address.rpartition(":")
        config = agent_config(tmp_path, gw=GW, broker_port=None, modbus=(host, int(port)),
                              devices=DEVICES)
        async with agent(config):
            def first_states() -> bool:
                return {m.source.id for m in outbox_records(tmp_path)
                        if isinstance(m, Measurement) and m.quantity is Quantity.STATE} >= {
                    "modbus/bus1/4/ch1", "modbus/bus1/4/ch2", "modbus/bus1/9/run",
                    "modbus/bus1/9/manual"}
            await until(first_states, "the first state of every contact in the outbox")
            assert not [r for r in outbox_records(tmp_path) if isinstance(r, Event)]
            di[0] = False  # someone closes the supply valve
            server.devices[9].holding[2] = 0b001  # the pump runs, switched to manual
            await until(lambda: bool(events(tmp_path, "4/ch1", EventType.VALVE_OFF_NORMAL)
                                     and events(tmp_path, "9/manual", EventType.MANUAL_MODE)),
                        "valve_off_normal and manual_mode in the outbox")
            (valve,) = events(tmp_path, "4/ch1", EventType.VALVE_OFF_NORMAL)
            assert valve.active and valve.priority is Priority.ALARM
            assert valve.source.description == "B1 wet riser supply valve"
            assert valve.detail == "channel 1: closed (normal: open)"
            (running,) = events(tmp_path, "9/run", EventType.RUNNING)
            assert running.active and running.source.description == "fire pump 1 run"
            di[0] = True
            await until(lambda: [e.active for e in events(tmp_path, "4/ch1",
                                                          EventType.VALVE_OFF_NORMAL)]
                        == [True, False], "the valve reopened")
            local = await asyncio.to_thread(  # the loop keeps serving the agent meanwhile
                firegate_json, "events", "--config", str(config), "--kind", "valve_off_normal")
    # the local view (state.db, `firegate events`) shows the raise and the restore
    assert sorted((e["source_id"], e["active"]) for e in local) == [
        ("modbus/bus1/4/ch1", False), ("modbus/bus1/4/ch1", True)]
    assert {e["description"] for e in local} == {"B1 wet riser supply valve"}
    assert not events(tmp_path, "4/ch2", EventType.FAULT)  # the healthy pump never tripped


async def test_a_valve_reopened_while_the_agent_was_down_is_restored_after_the_restart(
        tmp_path: Path) -> None:
    """Conditions survive a restart (state.db): a valve closed before the stop and reopened
    while the agent was down is restored once after it; one still closed is not raised
    twice."""
    server = ContactServer((4, 9))
    di = server.devices[4].inputs
    di[1] = True  # the trip relay energised: healthy
    server.devices[9].holding[:3] = [650, 10, 0b000]  # auto bit clear: manual, and it stays so
    async with server.serving():
        host, _, port = server.address.rpartition(":")
        config = agent_config(tmp_path, gw=GW, broker_port=None, modbus=(host, int(port)),
                              devices=DEVICES)
        async with agent(config):  # valve 1 closed from the start
            await until(lambda: bool(events(tmp_path, "4/ch1", EventType.VALVE_OFF_NORMAL)
                                     and events(tmp_path, "9/manual", EventType.MANUAL_MODE)),
                        "valve_off_normal and manual_mode raised")
            # the conditions write follows the outbox commit: wait for it, then stop
            await until(lambda: {("modbus/bus1/4/ch1", "valve_off_normal"),
                                 ("modbus/bus1/9/manual", "manual_mode")} <= conditions(tmp_path),
                        "both conditions in state.db")
        di[0] = True  # reopened while nobody watched
        async with agent(config):
            await until(lambda: [e.active for e in events(tmp_path, "4/ch1",
                                                          EventType.VALVE_OFF_NORMAL)]
                        == [True, False], "the restore after the restart")
            polls = server.devices[9].requests.get(3, 0)
            await until(lambda: server.devices[9].requests.get(3, 0) >= polls + 10,
                        "ten more polls of the pump")
    assert [e.active for e in events(tmp_path, "9/manual", EventType.MANUAL_MODE)] == [True]
