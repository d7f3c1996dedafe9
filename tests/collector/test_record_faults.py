"""One bad record costs only itself (issue 14, part 2): a batch holding a fire alarm and a
record the contract refuses stores and notifies the fire alarm and dead-letters the bad record
alone, with its path and reason. Real Mosquitto, real collector, SQLite store, a real HTTP
receiver for the webhook."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.deadletter import DeadLetters
from collector.ledger import SeqLedger
from protocols.wire import (
    Bus,
    Event,
    EventType,
    Measurement,
    Quantity,
    Source,
    WireError,
    WireErrorReason,
    decode_batch,
    decode_batch_partial,
    encode_batches,
)
from tests.infra.mosquitto import Mosquitto

from .conftest import config_data, running, stored_records, wait_until, write_config
from .test_notify import SECRET, Receiver

NOW = 1_718_000_000_000
SMOKE = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")
PRESSURE = Source("modbus/bus1/3/pressure", Bus.MODBUS)
ANALOG = Source("modbus/bus1/9/analog", Bus.MODBUS)
BAD_UNIT = "ABCDEFGHIJKLMNOPQ"  # an analog unit of 17 characters: the contract allows 16


def mixed_batch(gateway: str = "gw-1") -> bytes:
    """seq 1 a reading, seq 2 a fire alarm, seq 3 an analog reading whose unit is too long."""
    records = [
        Measurement(source=PRESSURE, quantity=Quantity.PRESSURE, value=0.31, receive_ms=NOW,
                    unit="MPa", seq=1),
        Event(source=SMOKE, type=EventType.FIRE_ALARM, receive_ms=NOW, seq=2),
        Measurement(source=ANALOG, quantity=Quantity.ANALOG, value=7.0, receive_ms=NOW + 1,
                    unit="PLACEHOLDER_UNIT", seq=3),
    ]
    (payload,) = encode_batches(gateway, "site-1", NOW, records)
    assert payload.count(b'"PLACEHOLDER_UNIT"') == 1
    return payload.replace(b'"PLACEHOLDER_UNIT"', json.dumps(BAD_UNIT).encode())


def test_the_decoder_keeps_the_good_records_and_names_the_bad_one() -> None:
    payload = mixed_batch()
    with pytest.raises(WireError):
        decode_batch(payload)  # the strict decoder still refuses the whole message
    partial = decode_batch_partial(payload)
    assert partial.batch is not None
    assert [r.seq for r in partial.batch.records] == [1, 2]
    (fault,) = partial.faults
    assert (fault.position, fault.seq, fault.error.path) == (2, 3, "recs[2].u")
    assert fault.error.reason is WireErrorReason.BAD_VALUE
    assert json.loads(fault.raw)["u"] == BAD_UNIT


def test_batch_level_faults_still_refuse_the_batch() -> None:
    good = mixed_batch().replace(json.dumps(BAD_UNIT).encode(), b'"V"')
    assert len(decode_batch_partial(good).batch.records) == 3  # type: ignore[union-attr]
    for payload, reason in (
            (b"not json", WireErrorReason.NOT_JSON),
            (good.replace(b'"v":1,', b'"v":2,', 1), WireErrorReason.UNSUPPORTED_VERSION),
            (good.replace(b'"gw":"gw-1"', b'"gw":"gw 1"'), WireErrorReason.BAD_VALUE),
            (b'{"v":1,"gw":"gw-1","ts":1,"recs":[]}', WireErrorReason.EMPTY_BATCH),
            (good.replace(b'"seq":3', b'"seq":2'), WireErrorReason.DUPLICATE_SEQ)):
        with pytest.raises(WireError) as info:
            decode_batch_partial(payload)
        assert info.value.reason is reason, payload[:80]


def test_a_batch_of_only_bad_records_is_all_faults() -> None:
    payload = mixed_batch().replace(b'"u":"MPa"', b'"u":"psi"')
    partial = decode_batch_partial(payload)
    assert partial.batch is not None and [r.seq for r in partial.batch.records] == [2]
    assert [f.seq for f in partial.faults] == [1, 3]


def test_a_bad_record_does_not_take_the_fire_alarm_with_it(
        mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = Receiver()
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto,
        webhook=[{"url": receiver.url, "secret_env": "HOOK_SECRET", "retry_min_s": 0.05,
                  "retry_max_s": 0.3}]))
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-1", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        with running(cfg) as c:
            pub.publish("firegate/v1/gw-1/records", mixed_batch(), qos=1).wait_for_publish(10)
            wait_until(lambda: c.metrics.records_stored.value() == 2 and
                       c.metrics.dead_letters.value("bad_value") == 1, "stored and refused")
            wait_until(lambda: any(json.loads(b).get("kind") == "fire_alarm"
                                   for _, b in receiver.requests), "the fire alarm notified")
            assert c.metrics.records_dead_lettered.value() == 1
            # The same message again (a redelivery): nothing stored twice.
            pub.publish("firegate/v1/gw-1/records", mixed_batch(), qos=1).wait_for_publish(10)
            wait_until(lambda: c.metrics.dead_letters.value("bad_value") == 2, "the repeat")
            assert c.metrics.records_stored.value() == 2
    finally:
        pub.disconnect()
        pub.loop_stop()
        receiver.close()
    assert sorted(stored_records(cfg.sink.sqlite_path)["gw-1"]) == [1, 2]
    fires = [d for d in receiver.delivered() if d["kind"] == "fire_alarm"]
    assert len(fires) == 1 and fires[0]["active"]
    letters = DeadLetters(cfg.deadletter_path)
    try:
        newest = letters.recent(1)[0]
        assert (newest.reason, newest.path, newest.topic) == (
            "bad_value", "recs[2].u", "firegate/v1/gw-1/records")
        assert json.loads(newest.payload)["seq"] == 3  # the record alone, not the batch
    finally:
        letters.close()
    ledger = SeqLedger(cfg.ledger_path)
    try:
        assert ledger.gaps() == []  # seq 3 is accounted for: a dead letter, not a gap
    finally:
        ledger.close()
