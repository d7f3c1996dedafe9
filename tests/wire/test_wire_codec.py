"""Codec behaviour beyond the golden bytes: leniency that is allowed, helpers, the source memo."""

from __future__ import annotations

import json

import pytest

from protocols.wire import (
    MAX_RECORDS_PER_BATCH,
    Bus,
    Measurement,
    Priority,
    Quantity,
    Source,
    WireError,
    WireErrorReason,
    check_gateway,
    codec,
    decode_batch,
    decode_command,
    decode_health,
    decode_status,
    encode_batch,
    encode_batches,
    encode_status,
    last_will,
    pack_batches,
    peek_command_id,
)

MEAS = {
    "seq": 1,
    "k": "m",
    "rt": 1,
    "src": {"id": "s", "bus": "ble"},
    "q": "rssi",
    "v": -70,
    "u": "dBm",
}


def payload(**top: object) -> bytes:
    obj = {"v": 1, "gw": "gw-1", "ts": 1, "recs": [MEAS]}
    obj.update(top)
    return json.dumps(obj).encode()


def test_x_keys_are_ignored_at_every_level():
    rec = {**MEAS, "x_raw": "0a0b", "src": {**MEAS["src"], "x_rssi_raw": [1, 2]}}
    batch = decode_batch(payload(x_collector_hint={"a": 1}, recs=[rec]))
    assert batch == decode_batch(payload())
    assert decode_status(b'{"v":1,"gw":"g","state":"online","ts":1,"x_boot":3}').gateway_id == "g"


def test_null_means_absent_for_optional_fields():
    rec = {**MEAS, "st": None, "pr": None, "src": {**MEAS["src"], "desc": None, "sa": None}}
    assert decode_batch(payload(site=None, recs=[rec])) == decode_batch(payload())


def test_measurement_priority_is_optional_and_omitted_when_default():
    explicit = decode_batch(payload(recs=[{**MEAS, "pr": 3}]))
    assert explicit.records[0].priority is Priority.MEASUREMENT
    assert b'"pr"' not in encode_batch(explicit)
    urgent = decode_batch(payload(recs=[{**MEAS, "pr": 1}]))
    assert urgent.records[0].priority is Priority.ALARM
    assert b'"pr":1' in encode_batch(urgent)


def test_values_decode_as_floats():
    (m,) = decode_batch(payload()).records
    assert isinstance(m, Measurement)
    assert m.value == -70.0 and type(m.value) is float


def test_max_bytes_applies_before_parsing():
    small = payload()
    decode_batch(small, max_bytes=len(small))
    with pytest.raises(WireError) as info:
        decode_batch(small, max_bytes=len(small) - 1)
    assert info.value.reason is WireErrorReason.TOO_LARGE


def test_pack_batches_reports_the_seqs_of_each_payload():
    src = Source("modbus/bus1/1/level", Bus.MODBUS)
    records = [
        Measurement(seq=s, receive_ms=1, source=src, quantity=Quantity.LEVEL, value=1, unit="m")
        for s in (5, 3, 9, 4)  # the outbox may send out of seq order (priority first)
    ]
    packed = pack_batches("gw-1", None, 1, records, max_records=3)
    assert [p.seqs for p in packed] == [(5, 3, 9), (4,)]
    assert encode_batches("gw-1", None, 1, []) == []
    with pytest.raises(ValueError, match="max_records"):
        pack_batches("gw-1", None, 1, records, max_records=MAX_RECORDS_PER_BATCH + 1)
    with pytest.raises(WireError) as info:
        encode_batches("gw 1", None, 1, records)
    assert (info.value.reason, info.value.path) == (WireErrorReason.BAD_VALUE, "gw")


def test_check_gateway_covers_status_and_health():
    check_gateway("gw-1", last_will("gw-1", 0))
    health = decode_health(
        b'{"v":1,"gw":"gw-1","ts":1,"uptime_s":1,"ver":"1","ob_depth":0,"last_seq":0}'
    )
    with pytest.raises(WireError) as info:
        check_gateway("gw-2", health)
    assert info.value.reason is WireErrorReason.GATEWAY_MISMATCH


def test_peek_command_id_recovers_the_id_of_a_refused_command():
    newer = b'{"v":1,"id":"c-9","cmd":"reboot","ts":1}'
    with pytest.raises(WireError):
        decode_command(newer)
    assert peek_command_id(newer) == "c-9"
    assert peek_command_id(b'{"v":1,"id":"c 9"}') is None
    assert peek_command_id(b'{"v":1}') is None
    assert peek_command_id(b"\xff") is None
    assert peek_command_id(b'{"v":2,"id":"c-1"}') is None


def test_source_memo_changes_speed_not_results(monkeypatch):
    data = payload(recs=[{**MEAS, "seq": i} for i in range(1, 50)])
    codec._SOURCES.clear()
    cold = decode_batch(data)
    assert codec._SOURCES  # filled
    assert decode_batch(data) == cold
    # Sources decoded through the memo are shared objects, equal to fresh ones.
    assert cold.records[0].source is cold.records[1].source
    assert cold.records[0].source == Source("s", Bus.BLE)
    # Sources with x_* keys are not kept (their values are unbounded).
    codec._SOURCES.clear()
    decode_batch(payload(recs=[{**MEAS, "src": {**MEAS["src"], "x_pad": "x" * 1000}}]))
    assert not codec._SOURCES
    decode_batch(data)
    # Bounded: emptied before a batch when over the limit.
    monkeypatch.setattr(codec, "SOURCE_CACHE_MAX", 0)
    codec._SOURCES[("junk",)] = codec._SOURCES[next(iter(codec._SOURCES))]
    decode_batch(data)
    assert ("junk",) not in codec._SOURCES


def test_status_round_trips_without_optional_fields():
    status = last_will("gw-1", 7)
    assert encode_status(status) == b'{"v":1,"gw":"gw-1","state":"offline","ts":7,"reason":"lwt"}'
