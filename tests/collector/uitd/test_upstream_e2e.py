"""Forwarding upward end to end: a lower collector reports to an upper one as a UITD, both
real processes (``python -m collector --config ...``), each with its own Mosquitto, the upper
one listening as a GB/T 26875.3 centre (``[gb26875] listen``). Gateways publish fire alarms to
the lower one; ``kill -9`` hits the lower one mid-stream, then the upper one. Every fire alarm
arrives at the upper one, stored with its description, and is confirmed (the lower queue
empties)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import load_config
from collector.status import collect_status
from protocols.gb26875 import Command
from protocols.wire import Bus, Event, EventType, Source, encode_batches
from tests.collector.conftest import CollectorProcess, config_data, stored_points, wait_until
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port

from .fake_uitd import FakeUitd, fire_alarm

NOW = 1_765_000_000_000
UITD = "0x0000000a0001"
WAIT = 60.0  # two collectors, kills, reconnect back-offs: generous on a loaded machine


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(data), encoding="utf-8")  # arrays of tables in a table
    return path


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[tuple[Mosquitto, Mosquitto]]:
    with Mosquitto(tmp_path / "broker-low") as low, Mosquitto(tmp_path / "broker-up") as up:
        yield low, up


class Gateways:
    """Two gateways publishing fire alarms over MQTT, one message each."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-gateways",
                                  protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent: dict[str, str] = {}  # description -> gateway

    def fire(self, gw: str, n: int) -> None:
        desc = f"{gw}楼{n}号感烟"
        # Both gateways' panels use the same addresses: the upper one must not mix them.
        src = Source(f"panel/1-1/42-0x{n:08x}", Bus.GB26875, system_type=1, system_address=1,
                     component_type=42, component_address=n, description=desc)
        ev = Event(source=src, type=EventType.FIRE_ALARM, receive_ms=NOW + n * 1000, seq=n)
        (payload,) = encode_batches(gw, f"site-{gw}", NOW, [ev], epoch=3)
        self.client.publish(f"firegate/v1/{gw}/records", payload, qos=1).wait_for_publish(10)
        self.sent[desc] = gw

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _upper_sources(store: Path) -> dict[str, set[str]]:
    """Fire alarms stored upstairs under the lower collector's UITD: description -> the
    source ids they were stored under."""
    if not store.exists():
        return {}
    out: dict[str, set[str]] = {}
    for p in stored_points(store, "fg_event"):
        if p.tag("gateway") == "province-lower" and p.tag("type") == "fire_alarm" \
                and p.field("active") is True:
            out.setdefault(str(p.field("description")), set()).add(str(p.tag("source")))
    return out


def _upper_alarms(store: Path) -> set[str]:
    return set(_upper_sources(store))


def _upstream_status(config: Path) -> dict[str, Any]:
    rows = collect_status([load_config(config)])["upstreams"]
    return dict(rows[0]) if rows and rows[0].get("connected") else {}


def _pending(state: Path) -> int:
    path = state / "upstream.sqlite"
    if not path.exists():
        return -1
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM queue WHERE state = 'pending'").fetchone()[0])
    finally:
        db.close()


def test_every_fire_alarm_reaches_the_upper_centre_across_kill_9(
        tmp_path: Path, brokers: tuple[Mosquitto, Mosquitto]) -> None:
    low_broker, up_broker = brokers
    listen = free_port()
    up_state, low_state = tmp_path / "upper", tmp_path / "lower"
    upper_cfg = _write(tmp_path / "upper.toml", config_data(
        up_state, up_broker, collector={"id": "upper"},
        gb26875={"listen": f"127.0.0.1:{listen}",
                 "uitd": [{"address": UITD, "gateway": "province-lower",
                           "site": "lower-city"}]}))
    lower_cfg = _write(tmp_path / "lower.toml", config_data(
        low_state, low_broker, collector={"id": "lower"},
        gb26875={"listen": "", "upstream": [{
            "name": "province", "connect": f"127.0.0.1:{listen}", "uitd_address": UITD,
            "events": ["fire_alarm", "fault", "supervisory"], "sites": ["*"],
            "timeout_s": 1.0, "retries": 2, "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5, "keepalive_s": 5.0}]}))
    upper = CollectorProcess(upper_cfg).start()
    lower = CollectorProcess(lower_cfg).start()
    gws = Gateways(low_broker.port)
    store = up_state / "store.sqlite3"
    try:
        for n in range(1, 7):
            gws.fire("gw-a", n)
            gws.fire("gw-b", n)
        wait_until(lambda: len(_upper_alarms(store)) >= 1, "a first alarm upstairs", WAIT)
        for n in range(7, 10):
            gws.fire("gw-a", n)
            gws.fire("gw-b", n)
        assert lower.kill() == -9  # mid-stream: queued, sent, unconfirmed or not even stored
        for n in range(10, 13):
            gws.fire("gw-a", n)
        lower = CollectorProcess(lower_cfg).start()
        wait_until(lambda: len(_upper_alarms(store)) >= 16, "most alarms upstairs", WAIT)
        assert upper.kill() == -9  # the upper centre dies: the lower one keeps them queued
        for n in range(10, 16):
            gws.fire("gw-b", n)
        wait_until(lambda: _pending(low_state) > 0, "alarms queued while upstairs is down",
                   WAIT)
        upper = CollectorProcess(upper_cfg).start()
        wait_until(lambda: _upper_alarms(store) >= set(gws.sent), "every fire alarm upstairs",
                   WAIT)
        wait_until(lambda: _pending(low_state) == 0, "every upload confirmed", WAIT)
        # ``firegate collector status``: the upstream, connected, nothing waiting.
        # (The snapshot is saved every snapshot_interval_s: wait for one after the drain.)
        wait_until(lambda: _upstream_status(lower_cfg).get("confirmed", 0) > 0
                   and _upstream_status(lower_cfg).get("queue_depth") == 0,
                   "the lower collector's status showing its upstream drained", WAIT)
        row = _upstream_status(lower_cfg)
        assert row["name"] == "province" and row["connected"] is True
        assert row["queue_depth"] == 0 and row["oldest_unconfirmed_age_s"] is None
        assert row["collector"] == "lower" and row["evicted"] == 0
    finally:
        gws.close()
        lower.stop()
        upper.stop()
    assert len(gws.sent) == 27
    sources = _upper_sources(store)
    assert set(sources) == set(gws.sent)
    # Both gateways' panels used addresses 1-15: upstairs each alarm has its own source.
    assert all(len(ids) == 1 for ids in sources.values())
    assert len(set.union(*sources.values())) == len(gws.sent)


def test_a_building_uitd_alarm_goes_up_two_levels(
        tmp_path: Path, brokers: tuple[Mosquitto, Mosquitto]) -> None:
    """A building's UITD dials into the lower collector (its centre), which forwards to the
    upper one: the building's fire alarm, with its 部件说明, is stored at both levels, and the
    building's UITD got its confirm (stored below first, 图3)."""
    low_broker, up_broker = brokers
    up_port, low_port = free_port(), free_port()
    up_state, low_state = tmp_path / "upper", tmp_path / "lower"
    upper_cfg = _write(tmp_path / "upper.toml", config_data(
        up_state, up_broker, collector={"id": "upper"},
        gb26875={"listen": f"127.0.0.1:{up_port}",
                 "uitd": [{"address": UITD, "gateway": "province-lower",
                           "site": "lower-city"}]}))
    lower_cfg = _write(tmp_path / "lower.toml", config_data(
        low_state, low_broker, collector={"id": "lower"},
        gb26875={"listen": f"127.0.0.1:{low_port}",
                 "uitd": [{"address": "0x000000000379", "gateway": "bldg-7-uitd",
                           "site": "bldg-7"}],
                 "upstream": [{"name": "province", "connect": f"127.0.0.1:{up_port}",
                               "uitd_address": UITD, "timeout_s": 1.0,
                               "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}]}))
    upper = CollectorProcess(upper_cfg).start()
    lower = CollectorProcess(lower_cfg).start()
    uitd = FakeUitd(low_port, 0x379)
    try:
        raw = uitd.upload(fire_alarm(address=0x0102, description="三层东走廊感烟"))
        frame = uitd.next_frame()
        assert frame is not None and frame.command == Command.CONFIRM
        assert frame.serial == raw[2] | raw[3] << 8
        store = up_state / "store.sqlite3"
        wait_until(lambda: "三层东走廊感烟" in _upper_alarms(store), "the alarm upstairs", WAIT)
        below = [p for p in stored_points(low_state / "store.sqlite3", "fg_event")
                 if p.tag("type") == "fire_alarm"]
        assert [p.tag("gateway") for p in below] == ["bldg-7-uitd"]
        wait_until(lambda: _pending(low_state) == 0, "the upload confirmed upstairs", WAIT)
    finally:
        uitd.close()
        lower.stop()
        upper.stop()
