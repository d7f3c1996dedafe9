"""A fire alarm queued behind a backlog of another gateway's records (issue 15).

The writer is held in its first write (a real SQLite store that waits at the start of a write
until the test lets it go) while gateway A's ordinary records pile up in the collector, then
gateway B's fire alarm arrives behind them. Once the writer goes on, B's alarm must be in the
very next write - no later than A's backlog, which is what lets the collector not reorder its
queues (docs/benchmarks.md, "Stream at 10,000 records/s") - and A's records are stored in their
order, every one once. A grouping that left the alarm behind part of the backlog fails here."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.alarms.model import AlarmChange, Change
from collector.app import Collector
from collector.points import Point, Storable
from collector.sinks.sqlite import SqliteSink
from protocols.wire import Bus, Event, EventType, Source, encode_batches
from tests.infra.mosquitto import Mosquitto

from .conftest import config_data, stored_records, wait_until, write_config

NOW = 1_718_000_000_000
BACKLOG = 40


class HeldSink(SqliteSink):
    """The embedded store; its first write waits for :meth:`release`; every write's
    (gateway, seq) of event points is noted in order."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, retention_days=0)  # the records are of 2024: keep them
        self.began = threading.Event()
        self._go = threading.Event()
        self.writes: list[list[tuple[str, int]]] = []

    def write(self, points: Sequence[Storable]) -> None:
        if not self.began.is_set():
            self.began.set()
            assert self._go.wait(60), "never released"
        super().write(points)
        self.writes.append([(str(p.tag("gateway")), int(str(p.field("seq"))))
                            for p in points if isinstance(p, Point)
                            and p.measurement == "fg_event"])

    def release(self) -> None:
        self._go.set()


def _event(seq: int, kind: EventType) -> Event:
    return Event(source=Source(f"panel/1-1/{seq}-0x00000102", Bus.GB26875),
                 type=kind, receive_ms=NOW + seq, seq=seq)


def test_fire_alarm_is_in_the_next_write_and_one_gateways_order_holds(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    # Groups of 32: the backlog (40 + 1) is more than one plain group, so the alarm is in the
    # next write only because the writer takes everything already waiting (BACKLOG_FACTOR).
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto, collector={"group_max_messages": 32}))
    sink = HeldSink(cfg.sink.sqlite_path)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    c = Collector(cfg, sink=sink).start()
    try:
        wait_until(c.ingest.subscribed.is_set, "the collector's subscriptions")

        def send(gw: str, seq: int, kind: EventType) -> None:
            (payload,) = encode_batches(gw, f"site-{gw}", NOW, [_event(seq, kind)])
            pub.publish(f"firegate/v1/{gw}/records", payload, qos=1).wait_for_publish(10)

        send("gw-a", 1, EventType.OPERATION)
        wait_until(sink.began.is_set, "the writer held in its first write")
        for seq in range(2, BACKLOG + 2):
            send("gw-a", seq, EventType.OPERATION)
        send("gw-b", 1, EventType.FIRE_ALARM)
        # Everything decoded and waiting for the writer: A's backlog, then B's alarm.
        wait_until(lambda: c.prepared.qsize() == BACKLOG + 1, "the backlog queued")
        assert stored_records(cfg.sink.sqlite_path) == {}
        # The API's stream is fed by the alarm book's subscribers: note how much of A was
        # stored when B's alarm was announced there.
        announced: list[int] = []

        def heard(change: Change) -> None:
            if isinstance(change, AlarmChange) and change.alarm.gateway == "gw-b" and \
                    change.what == "raised":
                announced.append(len(stored_records(cfg.sink.sqlite_path).get("gw-a", ())))

        c.alarms.subscribe(heard)
        sink.release()
        wait_until(lambda: len(stored_records(cfg.sink.sqlite_path).get("gw-a", ()))
                   == BACKLOG + 1, "gateway A's records stored")
        wait_until(lambda: stored_records(cfg.sink.sqlite_path).get("gw-b") is not None,
                   "gateway B's fire alarm stored")
        wait_until(lambda: bool(announced), "B's alarm announced to the stream")
    finally:
        c.close()
        pub.loop_stop()
    assert announced[0] < BACKLOG + 1, "the alarm reached the stream only after A's backlog"
    writes = [w for w in sink.writes if w]
    assert writes[0] == [("gw-a", 1)]
    fire_at = next(i for i, w in enumerate(writes) if ("gw-b", 1) in w)
    last_a = max(i for i, w in enumerate(writes) if any(g == "gw-a" for g, _ in w))
    assert fire_at == 1, f"the fire alarm waited {fire_at - 1} writes behind the backlog"
    assert fire_at <= last_a
    a_order = [seq for w in writes for g, seq in w if g == "gw-a"]
    assert a_order == list(range(1, BACKLOG + 2))
