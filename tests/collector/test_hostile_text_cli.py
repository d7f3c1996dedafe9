"""``firegate collector status|query`` with hostile field text that went through a real broker and
collector: markup shown as text, controls shown visibly, ``--json`` exact (issue 14, part 6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import typer
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from collector.config import load_config
from firegate.cli.collector import register, render_status
from protocols.wire import (
    Bus,
    Event,
    EventType,
    GatewayState,
    Health,
    LinkState,
    Source,
    Status,
    encode_batches,
    encode_health,
    encode_status,
)
from tests.hostile_text import HOSTILE, HOSTILE_SHOWN, HOSTILE_SOURCE, assert_shown, clean_env
from tests.infra.mosquitto import Mosquitto

from .conftest import config_data, running, toml, wait_until

NOW = 1_718_000_000_000
DETAIL = "[red]x[/]\x1b]0;owned\x07"


def app() -> typer.Typer:
    root = typer.Typer()
    register(root)
    return root


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app(), ["collector", *args], env=clean_env())


def _status_json(path: Path) -> dict[str, Any]:
    result = _invoke("status", "--config", str(path), "--json")
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


@pytest.fixture
def hostile_collector(mosquitto: Mosquitto, tmp_path: Path) -> Path:
    """A collector's state and store after hostile text came through the broker."""
    path = tmp_path / "c.toml"
    path.write_text(toml(config_data(tmp_path / "state", mosquitto)))
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-1", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    fire = Event(source=Source(HOSTILE_SOURCE, Bus.GB26875, description=HOSTILE),
                 type=EventType.FIRE_ALARM, receive_ms=NOW, seq=1, detail=DETAIL)
    health = Health(gateway_id="gw-1", ts_ms=NOW, uptime_s=5.0, version=HOSTILE,
                    outbox_depth=0, links={HOSTILE: LinkState.DOWN}, last_seq=1)
    try:
        with running(load_config(path)):
            for topic, payload in (
                    ("firegate/v1/gw-1/status", encode_status(Status(
                        "gw-1", GatewayState.ONLINE, NOW, site="site-a", version=HOSTILE))),
                    ("firegate/v1/gw-2/status", encode_status(Status(
                        "gw-2", GatewayState.OFFLINE, NOW, site="site-b", reason=HOSTILE))),
                    ("firegate/v1/gw-1/health", encode_health(health)),
                    ("firegate/v1/gw-1/records",
                     encode_batches("gw-1", "site-a", NOW, [fire])[0])):
                pub.publish(topic, payload, qos=1).wait_for_publish(10)

            def arrived() -> bool:
                doc = _status_json(path)
                gws = {g["id"]: g for g in doc["gateways"]["list"]}
                return (doc["collectors"][0].get("records_stored") == 1
                        and gws.get("gw-1", {}).get("links_down") == [HOSTILE]
                        and gws.get("gw-2", {}).get("reason") == HOSTILE
                        and any(a["kind"] == "fire_alarm" for a in doc["alarms"]))

            wait_until(arrived, "the hostile records, status and health in the state")
    finally:
        pub.disconnect()
        pub.loop_stop()
    return path


def test_status_shows_markup_and_controls_as_text_and_json_keeps_them(
        hostile_collector: Path) -> None:
    doc = _status_json(hostile_collector)
    (fire,) = [a for a in doc["alarms"] if a["kind"] == "fire_alarm"]
    assert (fire["source"], fire["text"]) == (HOSTILE_SOURCE, HOSTILE)
    gws = {g["id"]: g for g in doc["gateways"]["list"]}
    assert gws["gw-1"]["version"] == HOSTILE and gws["gw-2"]["reason"] == HOSTILE

    table = _invoke("status", "--config", str(hostile_collector))
    assert table.exit_code == 0, table.output
    assert_shown(table.output, HOSTILE_SOURCE, "fire_alarm", "site-a", "1 online, 1 offline")
    # The alarm's text, the site's reason, gw-1's version and down link, gw-2's reason.
    assert table.output.count(HOSTILE_SHOWN) >= 5, table.output


def test_query_shows_markup_and_controls_as_text_and_json_keeps_them(
        hostile_collector: Path) -> None:
    rows = _invoke("query", "--config", str(hostile_collector), "-m", "fg_event", "--json")
    assert rows.exit_code == 0, rows.output
    (row,) = [json.loads(line) for line in rows.output.splitlines()]
    assert row["tags"]["source"] == HOSTILE_SOURCE
    assert (row["fields"]["description"], row["fields"]["detail"]) == (HOSTILE, DETAIL)

    table = _invoke("query", "--config", str(hostile_collector), "-m", "fg_event")
    assert table.exit_code == 0, table.output
    # Field values are printed as JSON strings: C0 controls already read \u001b there.
    assert_shown(table.output, HOSTILE_SOURCE, "fire_alarm", '"[/x]三层[bold]东[/bold]'
                 "\\u001b[2J\\u0007走廊\\x9b31m␡\"", '"[red]x[/]\\u001b]0;owned\\u0007"')


def test_status_shows_sink_and_webhook_errors_as_text(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      hostile_collector: Path) -> None:
    # Errors quote what a database or a webhook receiver answered: field text too.
    for name, value in clean_env().items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    doc = _status_json(hostile_collector)
    doc["collectors"][0]["sink_error"] = HOSTILE
    doc["webhooks"] = [{"collector": "collector-1", "webhook": "hook", "lanes": {"fire": "up"},
                        "pending": 0, "failed": 0, "errors": 1, "last_error": HOSTILE,
                        "last_error_ms": NOW}]
    render_status(doc)
    out = capsys.readouterr().out
    assert_shown(out, "hook")
    assert out.count(HOSTILE_SHOWN) >= 7, out
