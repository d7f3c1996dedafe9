"""``firegate status|events|sensors`` with hostile field text in the agent's real local state:
markup shown as text, controls shown visibly, ``--json`` exact (issue 14, part 6)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer
from typer.testing import CliRunner

from edge.state import StateWriter
from firegate.cli import local
from protocols.wire import Bus, Event, EventType, Measurement, Quantity, Source
from tests.hostile_text import HOSTILE, HOSTILE_SHOWN, HOSTILE_SOURCE, assert_shown, clean_env

DETAIL = "rule [red]x[/red]\x1b]0;owned\x07"
DETAIL_SHOWN = "rule [red]x[/red]␛]0;owned␇"
UNIT = "[/u]\x1b[5m"  # free text only for Quantity.ANALOG (protocols/wire)


def _app() -> typer.Typer:
    app = typer.Typer()
    local.register(app)
    return app


def _write(data_dir: Path) -> None:
    now = int(time.time() * 1000)
    src = Source(HOSTILE_SOURCE, Bus.GB26875, description=HOSTILE)
    writer = StateWriter(data_dir / "state.db")
    writer.note([
        Event(source=src, type=EventType.FIRE_ALARM, receive_ms=now - 2_000, seq=1,
              detail=DETAIL),
        Measurement(source=src, quantity=Quantity.ANALOG, value=0.31, unit=UNIT,
                    receive_ms=now - 1_000, seq=2),
    ])
    writer.set_active({(HOSTILE_SOURCE, "threshold_low")})
    writer.set_snapshot("agent", {"pid": os.getpid(), "gateway_id": "gw-1", "site": "s1",
                                  "version": HOSTILE})
    writer.set_snapshot("links", {HOSTILE: {"state": "down", "since_ms": now,
                                            "detail": DETAIL}})
    writer.set_snapshot("counters", {HOSTILE: {"[/c]\x1b": 3}})
    writer.flush()
    writer.close()


def test_events_show_markup_and_controls_as_text_and_json_keeps_them(tmp_path: Path) -> None:
    _write(tmp_path)
    runner = CliRunner()
    res = runner.invoke(_app(), ["events", "--data-dir", str(tmp_path)], env=clean_env())
    assert res.exit_code == 0, res.output
    assert_shown(res.output, HOSTILE_SHOWN, HOSTILE_SOURCE, DETAIL_SHOWN, "fire_alarm")

    res = runner.invoke(_app(), ["events", "--data-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    (row,) = [json.loads(line) for line in res.output.splitlines()]
    assert (row["description"], row["source_id"], row["detail"]) == (HOSTILE, HOSTILE_SOURCE,
                                                                     DETAIL)


def test_sensors_and_status_show_markup_and_controls_as_text(tmp_path: Path) -> None:
    _write(tmp_path)
    runner = CliRunner()
    res = runner.invoke(_app(), ["sensors", "--data-dir", str(tmp_path)], env=clean_env())
    assert res.exit_code == 0, res.output
    assert_shown(res.output, HOSTILE_SHOWN, HOSTILE_SOURCE, "[/u]␛[5m", "threshold_low")
    res = runner.invoke(_app(), ["sensors", "--data-dir", str(tmp_path), "--json"])
    (sensor,) = [json.loads(line) for line in res.output.splitlines()]
    assert (sensor["description"], sensor["unit"]) == (HOSTILE, UNIT)

    res = runner.invoke(_app(), ["status", "--data-dir", str(tmp_path)], env=clean_env())
    assert res.exit_code == 0, res.output
    assert_shown(res.output, f"version {HOSTILE_SHOWN}", DETAIL_SHOWN, "[/c]␛",
                 f"{HOSTILE_SOURCE} (threshold_low)")
    assert res.output.count(HOSTILE_SHOWN) == 3  # version, link name, counter's driver
    res = runner.invoke(_app(), ["status", "--data-dir", str(tmp_path), "--json"])
    doc = json.loads(res.output)
    assert doc["agent"]["version"] == HOSTILE and doc["links"][HOSTILE]["detail"] == DETAIL
