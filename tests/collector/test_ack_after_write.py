"""Nothing is acknowledged before it is stored, shown deterministically (issue 19).

The collector is stopped exactly between its decision to write a group and the write: a sink
that blocks when the write begins holds the writer there. At that instant no PUBACK may have
left and no ``stored`` confirmation may have been published; the collector then dies with the
write unfinished, and a new collector on the same session receives the message again from the
broker and stores it. Moving the ack (or the confirmation) before the write fails this test
every time, not one run in two as the random kill test did."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.app import Collector
from collector.points import Storable
from collector.sinks.base import SinkError
from collector.sinks.sqlite import SqliteSink
from protocols.wire import Bus, Event, EventType, Source, encode_batches
from tests.infra.mosquitto import Mosquitto

from .conftest import config_data, running, stored_records, wait_until, write_config

NOW = 1_718_000_000_000
GW = "gw-gate"


class GatedSink(SqliteSink):
    """The embedded store, held at the start of every write until the test decides: then the
    write goes on (``release``) or fails as an outage (``fail``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.began = threading.Event()
        self._decided = threading.Event()
        self._fail = False

    def write(self, points: Sequence[Storable]) -> None:
        self.began.set()
        assert self._decided.wait(60), "the test never decided"
        if self._fail:
            raise SinkError("the collector died here")
        super().write(points)

    def fail(self) -> None:
        self._fail = True
        self._decided.set()


def test_no_ack_and_no_confirmation_before_the_write(mosquitto: Mosquitto,
                                                     tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(tmp_path / "state", mosquitto))
    heard: list[str] = []
    gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=GW, protocol=mqtt.MQTTv5)
    gw.on_message = lambda _c, _u, msg: heard.append(msg.topic)
    gw.connect("127.0.0.1", mosquitto.port)
    gw.subscribe(f"firegate/v1/{GW}/stored", qos=1)
    gw.loop_start()
    fire = Event(source=Source("panel/1-1/42-0x00000102", Bus.GB26875),
                 type=EventType.FIRE_ALARM, receive_ms=NOW, seq=1)
    sink = GatedSink(cfg.sink.sqlite_path)
    first = Collector(cfg, sink=sink).start()
    try:
        wait_until(first.ingest.subscribed.is_set, "the first collector's subscriptions")
        (payload,) = encode_batches(GW, "site-g", NOW, [fire], epoch=7)
        gw.publish(f"firegate/v1/{GW}/records", payload, qos=1).wait_for_publish(10)
        wait_until(sink.began.is_set, "the writer at the write")
        # The instant between the decision and the write: nothing may have been told yet.
        assert first.metrics.acks.value() == 0
        assert first.metrics.confirmations.values() == {}
        assert first.ledger.fresh(GW, [1], 7) == [True]
        sink.fail()  # ... and the collector dies there
    finally:
        first.close()
    assert heard == []
    assert stored_records(cfg.sink.sqlite_path).get(GW) is None
    with running(cfg) as second:  # same client id, persistent session: the broker still has it
        wait_until(lambda: second.metrics.records_stored.value() == 1, "the redelivery stored")
        wait_until(lambda: second.metrics.acks.value() >= 1, "acknowledged after the write")
        wait_until(lambda: heard == [f"firegate/v1/{GW}/stored"], "confirmed after the write")
    gw.disconnect()
    gw.loop_stop()
    assert sorted(stored_records(cfg.sink.sqlite_path)[GW]) == [1]
