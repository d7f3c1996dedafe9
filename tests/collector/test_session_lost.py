"""The collector notices when the broker no longer has its persistent session (issue 14 part 4).

Real Mosquitto, real collector. Two ways a session goes while the collector expects it:

* across a collector restart (the state directory's ``mqtt-session.json`` says it had one):
  another client takes its client id with a clean start - possible on a broker that does not
  bind client ids to users - and a fire alarm published meanwhile gets PUBACK 0x10 "no matching
  subscribers" and reaches nobody;
* within one process: the broker crashes before saving its store and comes back empty.

Either way: the counter, an error log line, the status snapshot and ``collector status`` in red;
the gap ledger then shows the missing record. A first start, a restart with the session kept, or
a new client id is no alarm.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from collector.config import MqttConfig
from collector.ingest import Inbound, MqttIngest
from collector.metrics import Metrics
from collector.session import SessionWatch
from collector.status import collect_status
from protocols.wire import (
    Bus,
    Event,
    EventType,
    Measurement,
    Quantity,
    Source,
    encode_batches,
)
from tests.infra.mosquitto import Mosquitto

from .conftest import config_data, running, wait_until, write_config

NOW = 1_718_000_000_000
LOST = "MQTT session lost"


class Gateway:
    """A plain MQTT v5 publisher; PUBACK reason codes by message id."""

    def __init__(self, broker: Mosquitto, client_id: str = "gw-1") -> None:
        self.acks: dict[int, ReasonCode] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def publish(self, seq: int, fire: bool = False) -> ReasonCode:
        src = Source("panel/1-1/42-0x00000102", Bus.GB26875) if fire else \
            Source("modbus/bus1/3/pressure", Bus.MODBUS)
        record = Event(source=src, type=EventType.FIRE_ALARM, receive_ms=NOW, seq=seq) if fire \
            else Measurement(source=src, quantity=Quantity.PRESSURE, value=0.3, receive_ms=NOW,
                             unit="MPa", seq=seq)
        info = self.client.publish("firegate/v1/gw-1/records",
                                   encode_batches("gw-1", None, NOW, [record])[0], qos=1)
        info.wait_for_publish(30)
        wait_until(lambda: info.mid in self.acks, "PUBACK")
        return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def take_client_id(broker: Mosquitto, client_id: str) -> None:
    """Connect with ``client_id`` and a clean start (session expiry 0), then leave: the broker
    discards the session it had under that id."""
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_connect = lambda *_: done.set()
    c.connect("127.0.0.1", broker.port, clean_start=True)
    c.loop_start()
    assert done.wait(30)
    c.disconnect()
    c.loop_stop()


def test_a_session_taken_while_the_collector_was_away_is_an_alarm(
        mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, logger="firegate.collector")
    cfg = write_config(tmp_path / "c.toml", config_data(tmp_path / "state", mosquitto))
    gw = Gateway(mosquitto)
    try:
        with running(cfg) as c:  # the first start: no session yet, and none expected
            assert gw.publish(1).value == 0
            wait_until(lambda: c.metrics.records_stored.value() == 1, "seq 1 stored")
            assert c.metrics.session_lost.value() == 0 and c.ingest.session.count == 0
        marker = json.loads((cfg.state_dir / "mqtt-session.json").read_text())
        assert (marker["url"], marker["client_id"]) == (cfg.mqtt.url, cfg.mqtt.client_id)
        assert LOST not in caplog.text
        take_client_id(mosquitto, cfg.mqtt.client_id)
        fire = gw.publish(2, fire=True)  # while nobody has the collector's session
        assert (fire.value, fire.getName()) == (0x10, "No matching subscribers")
        with running(cfg) as c:
            assert c.metrics.session_lost.value() == 1
            assert "firegate_collector_session_lost_total 1" in c.metrics.render()
            snap = c.snapshot(c.ingest.session.last_ms or 0)["session_lost"]
            assert isinstance(snap, dict) and snap["count"] == 1 and snap["last_ms"]
            assert gw.publish(3).value == 0
            wait_until(lambda: c.metrics.records_stored.value() == 1, "seq 3 stored")
            # the gap ledger shows what went: the fire alarm
            assert [(g.gateway_id, g.first, g.last) for g in c.ledger.gaps()] == \
                [("gw-1", 2, 2)]
        (line,) = [r for r in caplog.records if LOST in r.getMessage()]
        assert line.levelno == logging.ERROR
        text = line.getMessage()
        assert cfg.mqtt.client_id in text and "its state directory shows a session" in text
        assert "may have been lost" in text and "gap ledger" in text
        # collector status, from the state directory: the snapshot keeps it, shown in red
        doc = collect_status([cfg])
        (row,) = doc["collectors"]
        assert row["session_lost"]["count"] == 1
        from firegate.cli.collector import render_status

        monkeypatch.setenv("FORCE_COLOR", "1")
        monkeypatch.setenv("COLUMNS", "200")
        capsys.readouterr()
        render_status(doc)
        out = capsys.readouterr().out
        assert re.search(r"\x1b\[1;31msession lost 1x, last ", out), out  # bold red
        # a restart with the session kept is no alarm
        caplog.clear()
        with running(cfg) as c:
            assert c.metrics.session_lost.value() == 0
            assert c.snapshot(0)["session_lost"] == {"count": 0, "last_ms": None}
        assert LOST not in caplog.text
    finally:
        gw.close()


def test_a_broker_that_comes_back_empty_is_an_alarm(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Within one process, without a state directory (reconnects only): a broker restart that
    kept its store is fine; a crash before any save (autosave_interval 1800 s by default, so
    nothing on disk) loses the session."""
    caplog.set_level(logging.INFO, logger="firegate.collector")
    broker = Mosquitto(tmp_path / "broker").start()
    inbox: queue.Queue[Inbound] = queue.Queue()
    cfg = MqttConfig(port=broker.port, client_id="session-test", share_group=None,
                     reconnect_min_s=1, reconnect_max_s=1)
    ingest = MqttIngest(cfg, inbox, Metrics())

    def connects() -> list[bool]:  # session present, per CONNACK, from the collector's log
        return [m.group(1) == "True" for r in caplog.records
                if (m := re.search(r"as session-test \(session present: (\w+)\)",
                                   r.getMessage()))]

    try:
        ingest.start()
        wait_until(lambda: len(connects()) == 1 and ingest.subscribed.is_set(), "connected")
        assert connects() == [False] and ingest.session.count == 0  # a first connect
        broker.restart()  # SIGTERM: the store is saved, the session comes back
        wait_until(lambda: len(connects()) == 2, "reconnected")
        assert connects()[1] is True and ingest.session.count == 0
        broker.stop(signal.SIGKILL)
        (broker.directory / "mosquitto.db").unlink()  # as if it crashed before its first save
        broker.start()
        wait_until(lambda: len(connects()) == 3, "reconnected after the crash")
        assert connects()[2] is False
        assert ingest.session.count == 1 and ingest.metrics.session_lost.value() == 1
        assert "it was connected before in this process" in caplog.text
    finally:
        ingest.close()
        broker.stop()


def test_what_counts_as_an_expected_session(tmp_path: Path) -> None:
    marker = tmp_path / "mqtt-session.json"
    watch = SessionWatch("mqtt://a:1883", "c-1", marker, Metrics())
    assert watch.expected() is None and not watch.connack(False, 1_000)  # first ever
    assert json.loads(marker.read_text()) == {"url": "mqtt://a:1883", "client_id": "c-1",
                                              "since_ms": 1_000}
    restarted = SessionWatch("mqtt://a:1883", "c-1", marker, Metrics())
    assert restarted.expected() is not None and not restarted.connack(True, 2_000)
    assert json.loads(marker.read_text())["since_ms"] == 1_000  # kept from the first
    other = SessionWatch("mqtt://a:1883", "c-2", marker, Metrics())  # a new client id
    assert other.expected() is None and not other.connack(False, 3_000)
    assert json.loads(marker.read_text())["client_id"] == "c-2"
    moved = SessionWatch("mqtt://b:1883", "c-2", marker, Metrics())  # another broker
    assert not moved.connack(False, 4_000) and moved.count == 0
    assert moved.connack(False, 5_000) and moved.count == 1 and moved.last_ms == 5_000
    marker.write_text("not json")
    assert SessionWatch("mqtt://b:1883", "c-2", marker, Metrics()).expected() is None
    no_dir = SessionWatch("mqtt://b:1883", "c-2", tmp_path / "gone" / "m.json", Metrics())
    assert not no_dir.connack(False, 6_000) and no_dir.connack(False, 7_000)
    assert os.listdir(tmp_path) == ["mqtt-session.json"]
