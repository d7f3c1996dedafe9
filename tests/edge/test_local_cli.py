"""The technician's read commands against a state written by the real StateWriter."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer
from typer.testing import CliRunner

from edge.state import StateReader, StateWriter
from firegate.cli import local
from protocols.wire import Bus, Event, EventType, Measurement, Quantity, Source

NOW = int(time.time() * 1000)
DETECTOR = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")
HYDRANT = Source("modbus/bus1/3/pressure", Bus.MODBUS, description="1号消火栓")


def _app() -> typer.Typer:
    app = typer.Typer()
    local.register(app)
    return app


def _populate(data_dir: Path, *, keep: int = 20_000) -> StateWriter:
    global NOW  # noqa: PLW0603 - "now" is when the state is written, not when the module loaded
    NOW = int(time.time() * 1000)
    writer = StateWriter(data_dir / "state.db", keep_events=keep)
    writer.note([
        Event(source=DETECTOR, type=EventType.FIRE_ALARM, receive_ms=NOW - 60_000, seq=7),
        Measurement(source=HYDRANT, quantity=Quantity.PRESSURE, value=0.31, unit="MPa",
                    receive_ms=NOW - 5_000, seq=8),
        Event(source=Source(HYDRANT.id, Bus.RULE), type=EventType.THRESHOLD_LOW, seq=9,
              receive_ms=NOW - 1_000, value=0.1, limit=0.15, detail="rule hydrant-low"),
        Measurement(source=HYDRANT, quantity=Quantity.PRESSURE, value=0.10, unit="MPa",
                    receive_ms=NOW - 1_000, seq=10),
    ])
    writer.set_active({(HYDRANT.id, "threshold_low")})
    writer.set_snapshot("agent", {"pid": os.getpid(), "gateway_id": "gw-test", "site": "s1",
                                  "version": "0.1.0"})
    writer.set_snapshot("links", {"panel/com1": {"state": "down", "since_ms": NOW,
                                                 "detail": "silent 120 s"}})
    writer.set_snapshot("uplink", {"state": "up", "last_ack_ms": NOW - 2000})
    writer.set_snapshot("outbox", {"depth": {"fire": 0, "measurement": 12},
                                   "evicted": {"measurement": 3}, "last_seq": 10})
    writer.flush()
    return writer


def test_events_sensors_status_read_what_the_writer_stored(tmp_path: Path) -> None:
    _populate(tmp_path).close()
    runner = CliRunner()
    res = runner.invoke(_app(), ["events", "--data-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert [r["type"] for r in rows] == ["threshold_low", "fire_alarm"]  # newest first
    assert rows[1]["description"] == "三层东走廊感烟探测器" and rows[1]["seq"] == 7

    res = runner.invoke(_app(), ["events", "--data-dir", str(tmp_path), "--json",
                                 "--kind", "fire_alarm"])
    assert [json.loads(x)["seq"] for x in res.output.splitlines()] == [7]
    res = runner.invoke(_app(), ["events", "--data-dir", str(tmp_path), "--json",
                                 "--since", "30s"])
    assert [json.loads(x)["seq"] for x in res.output.splitlines()] == [9]

    res = runner.invoke(_app(), ["sensors", "--data-dir", str(tmp_path), "--json"])
    (sensor,) = [json.loads(x) for x in res.output.splitlines()]
    assert sensor["value"] == 0.10 and sensor["unit"] == "MPa" and sensor["seq"] == 10
    assert sensor["alarms"] == ["threshold_low"]

    res = runner.invoke(_app(), ["status", "--data-dir", str(tmp_path), "--json"])
    doc = json.loads(res.output)
    assert doc["running"] is True  # this test process' pid, fresh snapshot
    assert doc["links"]["panel/com1"]["state"] == "down"
    assert doc["outbox"]["evicted"] == {"measurement": 3}
    assert doc["active_threshold_alarms"] == [{"source": HYDRANT.id, "type": "threshold_low"}]

    res = runner.invoke(_app(), ["status", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0 and "gw-test" in res.output and "silent 120 s" in res.output
    res = runner.invoke(_app(), ["events", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0 and "fire_alarm" in res.output


def test_status_says_not_running_when_the_pid_is_gone(tmp_path: Path) -> None:
    writer = StateWriter(tmp_path / "state.db")
    writer.set_snapshot("agent", {"pid": 2**22 + 12345, "gateway_id": "gw"})
    writer.flush()
    writer.close()
    res = CliRunner().invoke(_app(), ["status", "--data-dir", str(tmp_path), "--json"])
    assert json.loads(res.output)["running"] is False


def test_events_are_bounded_newest_kept(tmp_path: Path) -> None:
    writer = StateWriter(tmp_path / "state.db", keep_events=100)
    for i in range(250):
        writer.note([Event(source=DETECTOR, type=EventType.FAULT, receive_ms=NOW + i, seq=i + 1)])
        if i % 50 == 49:
            writer.flush()
    writer.close()
    with StateReader(tmp_path / "state.db") as reader:
        rows = reader.events(limit=1000)
    assert len(rows) == 100 and rows[0].seq == 250 and rows[-1].seq == 151


def test_missing_state_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(_app(), ["events", "--data-dir", str(tmp_path)])
    assert res.exit_code == 1 and "no local state" in res.output


def test_bad_since_is_refused(tmp_path: Path) -> None:
    _populate(tmp_path).close()
    res = CliRunner().invoke(_app(), ["events", "--data-dir", str(tmp_path), "--since", "soon"])
    assert res.exit_code == 2 and "use 30s" in res.output


def test_status_shows_what_awaits_the_collectors_confirmation(tmp_path: Path) -> None:
    writer = _populate(tmp_path)
    writer.set_snapshot("outbox", {"depth": {"measurement": 12}, "in_flight": 2,
                                   "sent_unconfirmed": 7, "oldest_unconfirmed_s": 12.4,
                                   "last_seq": 10})
    writer.flush()
    writer.close()
    res = CliRunner().invoke(_app(), ["status", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "sent, awaiting the collector's confirmation: 7 (oldest 12 s)" in res.output
    res = CliRunner().invoke(_app(), ["status", "--data-dir", str(tmp_path), "--json"])
    assert json.loads(res.output)["outbox"]["sent_unconfirmed"] == 7


async def test_outbox_names_what_awaits_confirmation_while_the_agent_runs(
        tmp_path: Path) -> None:
    from edge.outbox import Outbox

    from .helpers import config, measurement

    async with Outbox(config(tmp_path)) as ob:
        await ob.append([measurement(i) for i in range(4)])
    writer = StateWriter(tmp_path / "state.db")
    writer.set_snapshot("agent", {"pid": os.getpid(), "gateway_id": "gw-test"})
    writer.set_snapshot("outbox", {"sent_unconfirmed": 3, "oldest_unconfirmed_s": 5.0})
    writer.flush()
    runner = CliRunner()
    doc = json.loads(runner.invoke(_app(), ["outbox", "--data-dir", str(tmp_path),
                                            "--json"]).output)
    assert doc["classes"]["measurement"]["records"] == 4
    assert (doc["sent_unconfirmed"], doc["oldest_unconfirmed_s"]) == (3, 5.0)
    res = runner.invoke(_app(), ["outbox", "--data-dir", str(tmp_path)])
    assert "sent, awaiting the collector's confirmation: 3 (oldest 5 s)" in res.output

    writer.set_snapshot("agent", {"pid": 2**22 + 12345, "gateway_id": "gw-test"})  # gone
    writer.flush()
    writer.close()
    doc = json.loads(runner.invoke(_app(), ["outbox", "--data-dir", str(tmp_path),
                                            "--json"]).output)
    assert doc["sent_unconfirmed"] is None  # after a restart every record is pending
    res = runner.invoke(_app(), ["outbox", "--data-dir", str(tmp_path)])
    assert "agent not running: every record above goes out at its next start" in res.output
