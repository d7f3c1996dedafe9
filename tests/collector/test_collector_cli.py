"""``firegate collector run|status|query``: the commands, their output, their exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from collector.status import merge_gaps
from firegate.cli.collector import register
from protocols.wire import (
    Bus,
    Event,
    EventType,
    GatewayState,
    Source,
    Status,
    encode_batches,
    encode_status,
)
from tests.infra.mosquitto import Mosquitto

from .conftest import REPO, CollectorProcess, config_data, running, toml, wait_until

NOW = 1_718_000_000_000


def app() -> typer.Typer:
    root = typer.Typer()
    register(root)
    return root


def test_the_group_has_run_status_and_query() -> None:
    result = CliRunner().invoke(app(), ["collector", "--help"])
    assert result.exit_code == 0
    for name in ("run", "status", "query"):
        assert name in result.output


def test_merge_gaps_over_collectors() -> None:
    # Collector A stored 1-10 and 21-30 of gw-1; B stored 11-15 and 31-40 (shared load).
    a = ([("gw-1", 11, 20, 5)], {"gw-1": 30})
    b = ([("gw-1", 1, 10, 7), ("gw-1", 16, 30, 7)], {"gw-1": 40})
    assert merge_gaps([a, b]) == [
        {"gateway": "gw-1", "first": 16, "last": 20, "missing": 5, "since_ms": 7}]
    assert merge_gaps([a]) == [
        {"gateway": "gw-1", "first": 11, "last": 20, "missing": 10, "since_ms": 5}]
    # A gateway only one collector has seen: the other misses all of it, not none of it.
    c: tuple[list[tuple[str, int, int, int]], dict[str, int]] = ([], {"gw-2": 3})
    assert merge_gaps([a, c]) == [
        {"gateway": "gw-1", "first": 11, "last": 20, "missing": 10, "since_ms": 5}]
    assert merge_gaps([]) == []


def test_run_refuses_a_bad_config_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nurl = "tcp://nowhere"\n')
    proc = subprocess.run([sys.executable, "-m", "collector", "--config", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "mqtt.url: must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'tcp://nowhere'" \
        in proc.stderr


def test_one_process_per_state_directory(mosquitto: Mosquitto, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml(config_data(tmp_path / "state", mosquitto)))
    first = CollectorProcess(path).start()
    try:
        proc = subprocess.run([sys.executable, "-m", "collector", "--config",
                               str(path)], cwd=REPO, capture_output=True, text=True, timeout=60,
                              check=False)
        assert proc.returncode == 1
        assert "is used by another collector process (pid " in proc.stderr
    finally:
        assert first.stop() == 0
    assert first.lines[-1] == "stopped\n"


def test_status_shows_sites_alarms_gateways_and_dead_letters(mosquitto: Mosquitto,
                                                             tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml(config_data(tmp_path / "state", mosquitto)))
    from collector.config import load_config

    cfg = load_config(path)
    runner = CliRunner()
    result = runner.invoke(app(), ["collector", "status", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["collectors"][0]["state"] == "never run"
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-1", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    smoke = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")
    fire = Event(source=smoke, type=EventType.FIRE_ALARM, receive_ms=NOW, seq=3)
    with running(cfg) as c:
        for topic, payload in (
                ("firegate/v1/gw-1/status", encode_status(Status("gw-1", GatewayState.ONLINE, NOW,
                                                                 site="site-a"))),
                ("firegate/v1/gw-2/status", encode_status(Status("gw-2", GatewayState.OFFLINE, NOW,
                                                                 site="site-b",
                                                                 reason="shutdown"))),
                ("firegate/v1/gw-1/records", encode_batches("gw-1", "site-a", NOW, [fire])[0]),
                ("firegate/v1/gw-1/records", b"garbage")):
            pub.publish(topic, payload, qos=1).wait_for_publish(10)
        wait_until(lambda: c.metrics.records_stored.value() == 1 and
                   c.metrics.dead_letters.value("not_json") == 1, "handled")
        wait_until(lambda: c.registry.sites.get("site-a") is not None, "site assessed")
        wait_until(lambda: json.loads(runner.invoke(app(), [
            "collector", "status", "--config", str(path), "--json"]).output
        )["collectors"][0].get("records_stored") == 1, "a snapshot with the record")
        running_doc = json.loads(runner.invoke(app(), [
            "collector", "status", "--config", str(path), "--json"]).output)
    pub.disconnect()
    pub.loop_stop()
    assert running_doc["collectors"][0]["state"] == "running"
    doc = json.loads(runner.invoke(app(), ["collector", "status", "--config", str(path),
                                           "--json"]).output)
    (collector,) = doc["collectors"]
    assert collector["state"] == "stopped" and collector["records_stored"] == 1
    assert doc["dead_letters"] == {"not_json": 1}
    sites = {s["site"]: s["colour"] for s in doc["sites"]}
    assert sites == {"site-a": "red", "site-b": "yellow"}  # gw-2 is offline
    # gw-1 sent seq 3 only: seqs 1..2 are a gap past its grace time (0 here), an alarm.
    assert sorted((a["kind"], a["source"]) for a in doc["alarms"]) == [
        ("fire_alarm", "panel/1-1/42-0x00000102"), ("gateway_offline", "gateway"),
        ("records_missing", "gateway")]
    assert (doc["gateways"]["online"], doc["gateways"]["offline"]) == (1, 1)
    assert doc["gaps"]["ranges"] == 1 and doc["gaps"]["list"][0]["first"] == 1  # 1..2 missing
    table = runner.invoke(app(), ["collector", "status", "--config", str(path)],
                          env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    for text in ("site-a", "red", "fire_alarm", "三层东走廊感烟探测器", "1 online, 1 offline",
                 "gaps: 2 records missing in 1 ranges", "dead letters: not_json 1", "stopped"):
        assert text in table.output, text
    # The same from a separate process (the installed entry point's code path).
    proc = subprocess.run([sys.executable, "-m", "firegate", "collector", "status", "--config",
                           str(path), "--json"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0 and json.loads(proc.stdout)["sites"] == doc["sites"]
