"""Where stored records join the upstream queue (collector/effects.py -> Forwarding.offer): on
the writer thread, before the message that carried them is acknowledged, and once per record
however often the broker delivers it. A real collector, real Mosquitto, the embedded store
switched off and on, a small codec centre on a real socket."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

from collector.app import Collector
from collector.config import load_config
from collector.points import Storable
from collector.sinks.base import SinkError
from collector.sinks.sqlite import SqliteSink
from protocols.wire import Bus, Event, EventType, Source, encode_batches
from tests.collector.conftest import config_data, wait_until
from tests.infra.mosquitto import Mosquitto

from .upstream_centre import MiniCentre

NOW = 1_765_000_000_000
GW = "gw-7"


class DownSink(SqliteSink):
    """The embedded store, down while ``down``: every write fails (an outage)."""

    down = True
    failed = 0

    def write(self, points: Sequence[Storable]) -> None:
        if self.down:
            DownSink.failed += 1
            raise SinkError("store down (test)")
        super().write(points)


def _rows(state: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(state / "upstream.sqlite")
    try:
        return [(k, s) for k, s in db.execute("SELECT key, state FROM queue ORDER BY id")]
    finally:
        db.close()


def test_queued_before_the_ack_and_once_per_record(mosquitto: Mosquitto,
                                                   tmp_path: Path) -> None:
    centre = MiniCentre()  # down at first: what is queued stays queued
    state = tmp_path / "state"
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(config_data(state, mosquitto, gb26875={
        "listen": "", "upstream": [{"name": "up", "connect": f"127.0.0.1:{centre.port}",
                                    "uitd_address": "0x000000000001", "timeout_s": 1.0,
                                    "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}]})))
    cfg = load_config(path)
    fire = Event(source=Source("panel/1-1/42-0x00000102", Bus.GB26875, system_type=1,
                               system_address=1, component_type=42, component_address=0x102,
                               description="三层东走廊感烟"),
                 type=EventType.FIRE_ALARM, receive_ms=NOW, seq=1)
    gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=GW, protocol=mqtt.MQTTv5)
    gw.connect("127.0.0.1", mosquitto.port)
    gw.loop_start()
    sink = DownSink(cfg.sink.sqlite_path)
    first = Collector(cfg, sink=sink).start()
    try:
        wait_until(first.ingest.subscribed.is_set, "subscriptions")
        (payload,) = encode_batches(GW, "site-7", NOW, [fire], epoch=5)
        gw.publish(f"firegate/v1/{GW}/records", payload, qos=1).wait_for_publish(10)
        wait_until(lambda: DownSink.failed > 0, "a failed write")
        # Queued durably for the upper centre, and not acknowledged to the broker.
        assert _rows(state) == [(f"{GW}:5:1", "pending")]
        assert first.metrics.acks.value() == 0
    finally:
        first.close()  # unacknowledged: the broker delivers it again
    sink = DownSink(cfg.sink.sqlite_path)
    sink.down = False
    second = Collector(cfg, sink=sink).start()
    try:
        wait_until(lambda: second.metrics.acks.value() >= 1, "the redelivery stored and acked")
        assert _rows(state) == [(f"{GW}:5:1", "pending")]  # once
        assert second.forwarding is not None
        assert second.forwarding.queue.counts["up"]["duplicate"] == 1
        centre.start()
        wait_until(lambda: len(centre.uploads(2)) == 1, "the upload confirmed upstairs")
        wait_until(lambda: _rows(state) == [(f"{GW}:5:1", "done")], "the row done")
        assert len(centre.uploads(2, confirmed=False)) == 1  # sent once
    finally:
        second.close()
        centre.stop()
        gw.loop_stop()
        gw.disconnect()
