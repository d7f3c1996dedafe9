"""Delivered means stored (issue 18), the collector's side: after a write it tells the gateway
what it stored (``stored``: the gateway's deletion point), it asks for what its gap ledger
misses (``resend``), settles what the gateway no longer has as lost, and raises
``records_missing`` for a gap older than its grace time. Real Mosquitto, real collector; the
test plays the gateway with paho."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.ledger import SeqLedger
from protocols.wire import (
    Bus,
    CommandAck,
    CommandName,
    Measurement,
    Quantity,
    Source,
    Stored,
    decode_command,
    decode_stored,
    encode_ack,
    encode_batches,
)
from tests.infra.mosquitto import Mosquitto

from .conftest import config_data, running, stored_records, wait_until, write_config

NOW = 1_718_000_000_000
GW = "gw-conf"
EPOCH = 0x0123456789ABCDEF
SRC = Source("modbus/bus1/3/pressure", Bus.MODBUS)


def reading(seq: int) -> Measurement:
    return Measurement(source=SRC, quantity=Quantity.PRESSURE, value=0.3, receive_ms=NOW + seq,
                       unit="MPa", seq=seq)


class Gateway:
    """paho as the gateway: publishes batches, hears ``stored`` and ``cmd``."""

    def __init__(self, port: int) -> None:
        self.stored: list[Stored] = []
        self.commands: list[bytes] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=GW, protocol=mqtt.MQTTv5)
        c.on_message = self._on_message
        c.on_subscribe = lambda *_: self.subscribed.set()
        c.connect("127.0.0.1", port)
        c.subscribe([(f"firegate/v1/{GW}/stored", 1), (f"firegate/v1/{GW}/cmd", 1)])
        c.loop_start()
        self.client = c
        assert self.subscribed.wait(30)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            if msg.topic.endswith("/stored"):
                self.stored.append(decode_stored(bytes(msg.payload)))
            else:
                self.commands.append(bytes(msg.payload))

    def confirmed(self) -> set[int]:
        with self._lock:
            return {s for st in self.stored if st.epoch == EPOCH and st.gateway_id == GW
                    for a, b in st.ranges for s in range(a, b + 1)}

    def send(self, *seqs: int) -> None:
        for payload in encode_batches(GW, "site-c", NOW, [reading(s) for s in seqs],
                                      epoch=EPOCH):
            self.client.publish(f"firegate/v1/{GW}/records", payload, qos=1
                                ).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_stored_is_confirmed_again_on_resend(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(tmp_path / "state", mosquitto))
    gw = Gateway(mosquitto.port)
    try:
        with running(cfg) as c:
            gw.send(1, 2, 3, 5)
            wait_until(lambda: gw.confirmed() == {1, 2, 3, 5}, "the confirmation")
            assert all(st.collector == cfg.collector_id for st in gw.stored)
            before = len(gw.stored)
            gw.send(2, 3)  # a resend whose confirmation was lost: stored once, confirmed again
            wait_until(lambda: len(gw.stored) > before, "the second confirmation")
            assert gw.stored[-1].ranges == ((2, 3),)
            assert c.metrics.duplicates.value() == 2
    finally:
        gw.close()
    assert sorted(stored_records(cfg.sink.sqlite_path)[GW]) == [1, 2, 3, 5]


def test_a_gap_is_asked_for_and_what_is_gone_is_settled_as_lost(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto,
        collector={"gap_grace_s": 0.5, "resend_after_s": 0.0, "resend_every_s": 30.0,
                   "snapshot_interval_s": 0.2}))
    gw = Gateway(mosquitto.port)
    try:
        with running(cfg) as c:
            gw.send(1, 2, 3, 7)  # 4..6 missing
            wait_until(lambda: bool(gw.commands), "a resend request")
            command = decode_command(gw.commands[0])
            assert command.cmd is CommandName.RESEND
            assert dict(command.args) == {"first": 4, "last": 6, "ep": f"{EPOCH:016x}"}
            # The alarm: a gap older than its grace time.
            wait_until(lambda: c.risk.missing_records() == {GW}, "records_missing raised")
            assert c.metrics.gap_alarms.value() == 1
            # The gateway still has 6, no longer 4 and 5.
            gw.send(6)
            ack = CommandAck(command.id, True, NOW, result={"resent": 1, "missing": [[4, 5]]})
            gw.client.publish(f"firegate/v1/{GW}/cmd/ack", encode_ack(ack), qos=1
                              ).wait_for_publish(10)
            wait_until(lambda: c.metrics.records_lost.value() == 2, "4 and 5 settled as lost")
            wait_until(lambda: c.risk.missing_records() == set(), "records_missing cleared")
            assert c.ledger.gaps() == []
            assert gw.confirmed() == {1, 2, 3, 6, 7}  # lost records are not confirmed stored
    finally:
        gw.close()
    ledger = SeqLedger(cfg.ledger_path)
    try:
        stats = ledger.stats().gateways[GW]
        assert (stats.stored, stats.lost, stats.epoch) == (5, 2, EPOCH)
    finally:
        ledger.close()
