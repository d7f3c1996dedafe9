"""The README's main job, started as a new user would: ``firegate demo`` end to end.

One real run (module fixture, ~90 s): the demo starts its own Mosquitto, the collector on the
embedded SQLite store, the panel, Modbus and BLE simulators and the edge agent, plays one
cycle of ``firegate/demo/scenario.toml`` and stops. The tests then read the collector's store
*independently* (``collector.sinks.sqlite.read_points``, ``firegate collector status --json``)
and check the demo's summary against it, and that every process it started is gone.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collector.sinks.sqlite import StoredPoint, connect, read_points
from tests.infra.simproc import FIREGATE, REPO

DURATION = 75  # one 60 s cycle of the story plus its last restores
SCENARIO = REPO / "firegate" / "demo" / "scenario.toml"


@dataclass(frozen=True)
class Run:
    proc: subprocess.CompletedProcess[str]
    summary: dict[str, Any]
    workdir: Path
    points: list[StoredPoint]

    def events(self, kind: str, source_prefix: str = "") -> list[StoredPoint]:
        return [p for p in self.points if p.measurement == "fg_event"
                and p.tags.get("type") == kind and p.tags["source"].startswith(source_prefix)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    base = tmp_path_factory.mktemp("demo")
    workdir, summary = base / "work", base / "summary.json"
    proc = subprocess.run(
        [FIREGATE, "demo", "--duration", str(DURATION), "--summary-json", str(summary),
         "--workdir", str(workdir)],
        cwd=REPO, capture_output=True, text=True, timeout=DURATION + 150, check=False,
        env={**os.environ, "COLUMNS": "200"})
    assert summary.exists(), f"no summary; stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    store = workdir / "collector" / "store.sqlite3"
    conn = connect(store, read_only=True)
    try:
        points = read_points(conn, limit=None)
    finally:
        conn.close()
    return Run(proc, json.loads(summary.read_text(encoding="utf-8")), workdir, points)


def test_clean_run_and_next_steps(run: Run) -> None:
    assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr
    assert run.summary["exit_code"] == 0
    assert run.summary["problems"] == []
    assert run.summary["outcome"] == "duration reached"
    assert run.summary["broker"]["embedded"] is True
    assert run.summary["store"]["kind"] == "sqlite"
    # The user is told where the data is and how to look at it.
    assert f"firegate status --config {run.workdir / 'gateway.toml'}" in run.proc.stdout
    assert f"firegate collector query --config {run.workdir / 'collector.toml'}" in \
        run.proc.stdout


def test_fire_alarm_stored_with_its_chinese_description(run: Run) -> None:
    panel = tomllib.loads(SCENARIO.read_text(encoding="utf-8"))["panel"]
    smoke = next(c for c in panel["components"] if c["id"] == "smoke-3F-east")
    alarms = [p for p in run.events("fire_alarm", "panel/") if p.fields["active"] is True]
    assert alarms, "no panel fire alarm in the store"
    assert alarms[0].fields["description"] == smoke["description"]  # "3F 东侧走廊 感烟探测器"
    assert alarms[0].fields["priority"] == 0
    assert alarms[0].tags["site"] == "demo-site" and alarms[0].tags["gateway"] == "demo-gw"
    assert run.summary["published"]["events"]["fire_alarm"]["raised"] >= 1


def test_pressure_and_level_values_stored_with_units(run: Run) -> None:
    values = [p for p in run.points if p.measurement == "fg_value"]
    pressure = [p for p in values if p.tags["source"] == "modbus/bus1/1/pressure"]
    level = [p for p in values if p.tags["source"] == "modbus/bus1/2/level"]
    assert len(pressure) >= 10 and len(level) >= 10
    assert {p.fields["unit"] for p in pressure} == {"MPa"}
    assert {p.fields["unit"] for p in level} == {"m"}
    readings = [float(p.fields["value"]) for p in pressure]
    assert max(readings) > 0.3 and min(readings) < 0.15  # static, then the hydrant open
    assert all(0.0 <= float(p.fields["value"]) <= 10.0 for p in level)
    shown = {(v["source"], v["unit"]) for v in run.summary["values"]}
    assert {("modbus/bus1/1/pressure", "MPa"), ("modbus/bus1/2/level", "m")} <= shown


def test_hydrant_threshold_raised_and_restored(run: Run) -> None:
    lows = run.events("threshold_low", "modbus/bus1/1/pressure")
    raised = [p for p in lows if p.fields["active"] is True]
    cleared = [p for p in lows if p.fields["active"] is False]
    assert raised and cleared, [p.fields for p in lows]
    assert float(raised[0].fields["value"]) < 0.15 == float(raised[0].fields["limit"])
    assert cleared[0].time_ns > raised[0].time_ns
    counted = run.summary["published"]["events"]["threshold_low"]
    assert counted["raised"] >= 1 and counted["cleared"] >= 1


def test_supply_valve_closed_once_and_reopened(run: Run) -> None:
    """The scenario closes a riser valve whose switch bounces: one raise, one restore, stored
    and printed."""
    valve = sorted(run.events("valve_off_normal", "modbus/bus1/3/valve_2"),
                   key=lambda p: p.time_ns)
    assert [p.fields["active"] for p in valve] == [True, False]
    printed = [line for line in run.proc.stdout.splitlines()
               if "valve_off_normal" in line and "modbus/bus1/3/valve_2" in line]
    assert any("closed (normal: open)" in line for line in printed), printed


def test_ble_ran_door_and_smoke_stored(run: Run) -> None:
    # ./dev installs dbus and the sim extra: BLE must run here, not be quietly left out.
    assert run.summary["ble"] == {"ran": True, "note": None}
    doors = run.events("door_open", "ble/")
    assert {p.fields["active"] for p in doors} == {True, False}
    smoke = run.events("fire_alarm", "ble/")
    assert any(p.fields["active"] is True for p in smoke)
    assert any(p.measurement == "fg_value" and p.tags["source"].startswith("ble/")
               and p.fields["unit"] == "MPa" for p in run.points)


def test_site_turned_red(run: Run) -> None:
    stored = {p.fields["colour"] for p in run.points
              if p.measurement == "fg_risk" and p.tags["site"] == "demo-site"}
    assert "red" in stored
    assert "red" in run.summary["site"]["colours_seen"]


def test_no_dead_letters_and_gateway_online(run: Run) -> None:
    res = subprocess.run([FIREGATE, "collector", "status", "--json", "--config",
                          str(run.workdir / "collector.toml")],
                         capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    assert status["dead_letters"] == {}
    assert run.summary["stored"]["dead_letters"] == {}
    assert run.summary["stored"]["duplicates"] == 0
    # The collector's count is what is in the store (events + values), and the view, which
    # subscribed before the agent started, saw no record the collector did not store.
    records = sum(1 for p in run.points if p.measurement in ("fg_event", "fg_value"))
    assert records == run.summary["stored"]["records"]
    assert 0 < run.summary["published"]["records"] <= records
    assert run.summary["published"]["undecodable"] == 0
    gw = run.summary["gateways"]["demo-gw"]
    assert gw["state_at_end"] == "online" and "online" in gw["states_seen"]
    online = [p for p in run.points if p.measurement == "fg_gateway" and p.fields["online"]]
    assert online, "no online status stored"


def test_every_process_is_gone(run: Run) -> None:
    procs = run.summary["processes"]
    assert {p["name"] for p in procs} == {"broker", "collector", "panel", "modbus", "ble",
                                          "agent"}
    ble = next(p for p in procs if p["name"] == "ble")
    assert len(ble["extra_pids"]) == 2  # the private dbus-daemon and the BlueZ mock
    for p in procs:
        assert p["exit_code"] == 0 and not p["killed"] and not p["left_out"], p
        for pid in [p["pid"], *p["extra_pids"]]:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_bad_scenario_is_refused_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "story.toml"
    bad.write_text('[demo]\nperiod = 30\n\n[panel]\n[[panel.events]]\nat = 5\naction = "fire"\n'
                   '\n[[panel.events]]\nat = 40\naction = "reset"\n', encoding="utf-8")
    work = tmp_path / "work"
    res = subprocess.run([FIREGATE, "demo", "--scenario", str(bad), "--workdir", str(work)],
                         capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
                         env={**os.environ, "COLUMNS": "300"})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "panel.events[1].at: 40 is not below demo.period (30)" in res.stdout
    assert not work.exists()  # nothing started, nothing written
    bad.write_text('[panel]\n[[panel.events]]\nat = 5\naction = "fire"\n', encoding="utf-8")
    res = subprocess.run([FIREGATE, "demo", "--scenario", str(bad), "--workdir", str(work)],
                         capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
                         env={**os.environ, "COLUMNS": "300"})
    assert res.returncode == 2
    assert "panel.events[0].action: must be one of 'fire_alarm'" in res.stdout
