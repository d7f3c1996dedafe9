"""Every refusal has its reason and its path; every WireErrorReason is produced here."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from protocols.wire import (
    MAX_PAYLOAD_BYTES,
    MAX_RECORDS_PER_BATCH,
    Batch,
    Bus,
    Measurement,
    Quantity,
    Source,
    WireError,
    WireErrorReason,
    check_gateway,
    decode_ack,
    decode_batch,
    decode_command,
    decode_health,
    decode_status,
    encode_batches,
    parse_topic,
)

R = WireErrorReason

MEAS = {
    "seq": 1,
    "k": "m",
    "rt": 1718000000000,
    "src": {"id": "modbus/bus1/3/pressure", "bus": "modbus"},
    "q": "pressure",
    "v": 0.3,
    "u": "MPa",
}
EVENT = {
    "seq": 2,
    "k": "e",
    "rt": 1718000000000,
    "pr": 0,
    "src": {"id": "panel/1-1/1", "bus": "gb26875", "sys": 1, "sa": 1, "ct": 21, "ca": 1},
    "ev": "fire_alarm",
    "on": True,
}


def batch(*recs: dict[str, Any], **top: Any) -> bytes:
    obj: dict[str, Any] = {"v": 1, "gw": "gw-1", "ts": 1718000000000, "recs": list(recs)}
    obj.update(top)
    return json.dumps({k: v for k, v in obj.items() if v is not DROP}, ensure_ascii=False).encode()


DROP = object()


def rec(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def src(**changes: Any) -> dict[str, Any]:
    return rec(EVENT["src"], **changes)


Case = tuple[Callable[[bytes], object], bytes, WireErrorReason, str]

CASES: dict[str, Case] = {
    # -- before and during parsing
    "too large": (decode_batch, b" " * (MAX_PAYLOAD_BYTES + 1), R.TOO_LARGE, ""),
    "not utf-8": (decode_batch, b'{"v":1,"gw":"\xff"}', R.NOT_UTF8, ""),
    "utf-16 is not utf-8": (decode_status, '{"v":1}'.encode("utf-16"), R.NOT_UTF8, ""),
    "not json": (decode_batch, b'{"v":1,', R.NOT_JSON, ""),
    "trailing garbage": (decode_status, b'{"v":1} x', R.NOT_JSON, ""),
    "bom": (decode_status, b'\xef\xbb\xbf{"v":1}', R.NOT_JSON, ""),
    "deep nesting": (decode_batch, b"[" * 60_000 + b"]" * 60_000, R.NOT_JSON, ""),
    "5000-digit integer": (decode_batch, b'{"v":1,"ts":' + b"9" * 5000 + b"}", R.NOT_JSON, ""),
    "NaN": (decode_batch, batch(rec(MEAS, v=float("nan"))), R.NOT_FINITE, "recs[0].v"),
    "-Infinity": (decode_health, b'{"v":1,"x":[1,-Infinity]}', R.NOT_FINITE, "x[1]"),
    "1e999": (decode_batch, batch(rec(MEAS), rec(EVENT, lim=1e999)), R.NOT_FINITE, "recs[1].lim"),
    "array": (decode_batch, b"[]", R.NOT_OBJECT, ""),
    "string": (decode_command, b'"ping"', R.NOT_OBJECT, ""),
    # -- version
    "v2": (decode_batch, b'{"v":2,"whatever":true}', R.UNSUPPORTED_VERSION, "v"),
    "v0": (decode_ack, b'{"v":0}', R.UNSUPPORTED_VERSION, "v"),
    "no v": (decode_status, b'{"gw":"gw-1"}', R.MISSING_FIELD, "v"),
    "v true": (decode_status, b'{"v":true}', R.BAD_TYPE, "v"),
    "v 1.0": (decode_status, b'{"v":1.0}', R.BAD_TYPE, "v"),
    # -- batch level
    "no recs": (decode_batch, batch(recs=DROP), R.MISSING_FIELD, "recs"),
    "no gw": (decode_batch, batch(MEAS, gw=DROP), R.MISSING_FIELD, "gw"),
    "recs object": (decode_batch, batch(recs={}), R.BAD_TYPE, "recs"),
    "bad gw": (decode_batch, batch(MEAS, gw="gw/1"), R.BAD_VALUE, "gw"),
    "gw +": (decode_batch, batch(MEAS, gw="+"), R.BAD_VALUE, "gw"),
    "bad site": (decode_batch, batch(MEAS, site="a b"), R.BAD_VALUE, "site"),
    "ts float": (decode_batch, batch(MEAS, ts=1.5), R.BAD_TYPE, "ts"),
    "unknown top key": (decode_batch, batch(MEAS, extra=1), R.UNKNOWN_FIELD, "extra"),
    "empty": (decode_batch, batch(), R.EMPTY_BATCH, "recs"),
    "too many": (
        decode_batch,
        batch(*[{}] * (MAX_RECORDS_PER_BATCH + 1)),
        R.TOO_MANY_RECORDS,
        "recs",
    ),
    "duplicate seq": (
        decode_batch,
        batch(MEAS, rec(EVENT, seq=9), rec(MEAS, seq=9)),
        R.DUPLICATE_SEQ,
        "recs[2].seq",
    ),
    # -- records
    "record not object": (decode_batch, batch(MEAS, [1]), R.BAD_TYPE, "recs[1]"),
    "no k": (decode_batch, batch(rec(MEAS, k=DROP)), R.MISSING_FIELD, "recs[0].k"),
    "k x": (decode_batch, batch(rec(MEAS, k="x")), R.BAD_VALUE, "recs[0].k"),
    "k 1": (decode_batch, batch(rec(MEAS, k=1)), R.BAD_TYPE, "recs[0].k"),
    "no rt": (decode_batch, batch(MEAS, rec(MEAS, seq=2, rt=DROP)), R.MISSING_FIELD, "recs[1].rt"),
    "seq true": (decode_batch, batch(rec(MEAS, seq=True)), R.BAD_TYPE, "recs[0].seq"),
    "seq 1.0": (decode_batch, batch(rec(MEAS, seq=1.0)), R.BAD_TYPE, "recs[0].seq"),
    "seq 0": (decode_batch, batch(rec(MEAS, seq=0)), R.BAD_VALUE, "recs[0].seq"),
    "seq 2**53": (decode_batch, batch(rec(MEAS, seq=2**53)), R.BAD_VALUE, "recs[0].seq"),
    "rt negative": (decode_batch, batch(rec(MEAS, rt=-1)), R.BAD_VALUE, "recs[0].rt"),
    "st string": (decode_batch, batch(rec(EVENT, st="now")), R.BAD_TYPE, "recs[0].st"),
    "pr 4": (decode_batch, batch(rec(EVENT, pr=4)), R.BAD_VALUE, "recs[0].pr"),
    "pr true": (decode_batch, batch(rec(MEAS, pr=True)), R.BAD_TYPE, "recs[0].pr"),
    "event pr missing": (decode_batch, batch(rec(EVENT, pr=DROP)), R.MISSING_FIELD, "recs[0].pr"),
    "event pr null": (decode_batch, batch(rec(EVENT, pr=None)), R.BAD_TYPE, "recs[0].pr"),
    "unit not allowed": (decode_batch, batch(rec(MEAS, u="°C")), R.BAD_VALUE, "recs[0].u"),
    "unit ℃": (decode_batch, batch(rec(MEAS, q="temperature", u="℃")), R.BAD_VALUE, "recs[0].u"),
    "unit missing": (decode_batch, batch(rec(MEAS, u=DROP)), R.MISSING_FIELD, "recs[0].u"),
    "unit null": (decode_batch, batch(rec(MEAS, u=None)), R.BAD_TYPE, "recs[0].u"),
    "analog unit long": (
        decode_batch,
        batch(rec(MEAS, q="analog", u="x" * 17)),
        R.BAD_VALUE,
        "recs[0].u",
    ),
    "unknown quantity": (decode_batch, batch(rec(MEAS, q="speed")), R.BAD_VALUE, "recs[0].q"),
    "value string": (decode_batch, batch(rec(MEAS, v="0.3")), R.BAD_TYPE, "recs[0].v"),
    "value bool": (decode_batch, batch(rec(MEAS, v=False)), R.BAD_TYPE, "recs[0].v"),
    "value 1e400 int": (decode_batch, batch(rec(MEAS, v=10**400)), R.BAD_VALUE, "recs[0].v"),
    "unknown record key": (
        decode_batch,
        batch(rec(MEAS, ev="fault")),
        R.UNKNOWN_FIELD,
        "recs[0].ev",
    ),
    "unknown event type": (decode_batch, batch(rec(EVENT, ev="fire")), R.BAD_VALUE, "recs[0].ev"),
    "on 1": (decode_batch, batch(rec(EVENT, on=1)), R.BAD_TYPE, "recs[0].on"),
    "state negative": (decode_batch, batch(rec(EVENT, sw=-1)), R.BAD_VALUE, "recs[0].sw"),
    "ops string": (decode_batch, batch(rec(EVENT, ops="reset")), R.BAD_TYPE, "recs[0].ops"),
    "ops item": (
        decode_batch,
        batch(rec(EVENT, ops=["reset", "Bad"])),
        R.BAD_VALUE,
        "recs[0].ops[1]",
    ),
    "ops false": (decode_batch, batch(rec(EVENT, ops=False)), R.BAD_TYPE, "recs[0].ops"),
    "operator big": (decode_batch, batch(rec(EVENT, opr=70000)), R.BAD_VALUE, "recs[0].opr"),
    "detail long": (decode_batch, batch(rec(EVENT, det="火" * 257)), R.BAD_VALUE, "recs[0].det"),
    "lone surrogate": (
        decode_batch,
        b'{"v":1,"gw":"g","ts":1,"recs":[{"seq":1,"k":"e","rt":1,"pr":0,"ev":"fault","on":true,'
        b'"src":{"id":"a","bus":"ble"},"det":"\\ud800"}]}',
        R.BAD_VALUE,
        "recs[0].det",
    ),
    # -- sources
    "src missing": (decode_batch, batch(rec(MEAS, src=DROP)), R.MISSING_FIELD, "recs[0].src"),
    "src string": (decode_batch, batch(rec(MEAS, src="modbus/1")), R.BAD_TYPE, "recs[0].src"),
    "src no bus": (
        decode_batch,
        batch(MEAS, rec(EVENT, src=src(bus=DROP))),
        R.MISSING_FIELD,
        "recs[1].src.bus",
    ),
    "src bad bus": (
        decode_batch,
        batch(rec(EVENT, src=src(bus="can"))),
        R.BAD_VALUE,
        "recs[0].src.bus",
    ),
    "src id space": (
        decode_batch,
        batch(rec(EVENT, src=src(id="a b"))),
        R.BAD_VALUE,
        "recs[0].src.id",
    ),
    "src id long": (
        decode_batch,
        batch(rec(EVENT, src=src(id="a" * 129))),
        R.BAD_VALUE,
        "recs[0].src.id",
    ),
    "src ca big": (
        decode_batch,
        batch(rec(EVENT, src=src(ca=2**32))),
        R.BAD_VALUE,
        "recs[0].src.ca",
    ),
    "src sa bool": (
        decode_batch,
        batch(rec(EVENT, src=src(sa=True))),
        R.BAD_TYPE,
        "recs[0].src.sa",
    ),
    "src desc long": (
        decode_batch,
        batch(rec(EVENT, src=src(desc="探" * 65))),
        R.BAD_VALUE,
        "recs[0].src.desc",
    ),
    "src unknown key": (
        decode_batch,
        batch(rec(EVENT, src=src(name="x"))),
        R.UNKNOWN_FIELD,
        "recs[0].src.name",
    ),
    "src list value": (
        decode_batch,
        batch(rec(EVENT, src=src(id=["a"]))),
        R.BAD_TYPE,
        "recs[0].src.id",
    ),
    # A src that equals a cached one under Python's 1 == True must not borrow its validity.
    "src alias of cached": (
        decode_batch,
        batch(EVENT, rec(EVENT, seq=3, src=src(sa=True))),
        R.BAD_TYPE,
        "recs[1].src.sa",
    ),
    "src alias 1.0": (
        decode_batch,
        batch(EVENT, rec(EVENT, seq=3, src=src(ca=1.0))),
        R.BAD_TYPE,
        "recs[1].src.ca",
    ),
    # -- status, health, command, ack
    "status state": (
        decode_status,
        b'{"v":1,"gw":"g","state":"away","ts":1}',
        R.BAD_VALUE,
        "state",
    ),
    "status no ts": (decode_status, b'{"v":1,"gw":"g","state":"online"}', R.MISSING_FIELD, "ts"),
    "status unknown": (
        decode_status,
        b'{"v":1,"gw":"g","state":"online","ts":1,"uptime":3}',
        R.UNKNOWN_FIELD,
        "uptime",
    ),
    "health evicted key": (
        decode_health,
        b'{"v":1,"gw":"g","ts":1,"uptime_s":1,"ver":"1","ob_depth":0,"last_seq":0,'
        b'"evicted":{"low":1}}',
        R.BAD_VALUE,
        "evicted.low",
    ),
    "health counter bool": (
        decode_health,
        b'{"v":1,"gw":"g","ts":1,"uptime_s":1,"ver":"1","ob_depth":0,"last_seq":0,'
        b'"counters":{"modbus":{"crc":true}}}',
        R.BAD_TYPE,
        "counters.modbus.crc",
    ),
    "health link state": (
        decode_health,
        b'{"v":1,"gw":"g","ts":1,"uptime_s":1,"ver":"1","ob_depth":0,"last_seq":0,'
        b'"links":{"uplink":"flaky"}}',
        R.BAD_VALUE,
        "links.uplink",
    ),
    "health negative uptime": (
        decode_health,
        b'{"v":1,"gw":"g","ts":1,"uptime_s":-1,"ver":"1","ob_depth":0,"last_seq":0}',
        R.BAD_VALUE,
        "uptime_s",
    ),
    "command name": (
        decode_command,
        b'{"v":1,"id":"c1","cmd":"reboot","ts":1}',
        R.BAD_VALUE,
        "cmd",
    ),
    "command id space": (
        decode_command,
        b'{"v":1,"id":"c 1","cmd":"ping","ts":1}',
        R.BAD_VALUE,
        "id",
    ),
    "command arg list": (
        decode_command,
        b'{"v":1,"id":"c1","cmd":"ping","ts":1,"args":{"a":[1]}}',
        R.BAD_TYPE,
        "args.a",
    ),
    "command ttl 0": (
        decode_command,
        b'{"v":1,"id":"c1","cmd":"ping","ts":1,"ttl":0}',
        R.BAD_VALUE,
        "ttl",
    ),
    "ack failure without error": (
        decode_ack,
        b'{"v":1,"id":"c1","ok":false,"ts":1}',
        R.MISSING_FIELD,
        "error",
    ),
    "ack ok with error": (
        decode_ack,
        b'{"v":1,"id":"c1","ok":true,"ts":1,"error":"x"}',
        R.BAD_VALUE,
        "error",
    ),
    "ack result array": (
        decode_ack,
        b'{"v":1,"id":"c1","ok":true,"ts":1,"result":[1]}',
        R.BAD_TYPE,
        "result",
    ),
    "ack ok string": (decode_ack, b'{"v":1,"id":"c1","ok":"yes","ts":1}', R.BAD_TYPE, "ok"),
}


@pytest.mark.parametrize(("decode", "payload", "reason", "path"), CASES.values(), ids=CASES.keys())
def test_refusal_has_reason_and_path(decode, payload, reason, path):
    with pytest.raises(WireError) as info:
        decode(payload)
    assert (info.value.reason, info.value.path) == (reason, path), str(info.value)
    assert isinstance(info.value, ValueError)


def test_gateway_mismatch():
    batch = decode_batch(batch_bytes := globals()["batch"](MEAS))
    check_gateway("gw-1", batch)
    with pytest.raises(WireError) as info:
        check_gateway("gw-2", batch)
    assert (info.value.reason, info.value.path) == (R.GATEWAY_MISMATCH, "gw")
    assert batch_bytes


def test_bad_topic():
    with pytest.raises(WireError) as info:
        parse_topic("firegate/v1/gw-1/events")
    assert (info.value.reason, info.value.path) == (R.BAD_TOPIC, "topic")


def test_encoder_too_large_names_the_record():
    small = Source("s", Bus.MODBUS)
    big = Source("b", Bus.GB26875, description="长" * 64)
    records = [
        Measurement(seq=1, receive_ms=1, source=small, quantity=Quantity.VOLTAGE, value=1),
        Measurement(seq=2, receive_ms=1, source=big, quantity=Quantity.VOLTAGE, value=1),
    ]
    with pytest.raises(WireError) as info:
        encode_batches("gw-1", None, 1, records, max_bytes=200)
    assert (info.value.reason, info.value.path) == (R.TOO_LARGE, "recs[1]")


# The reasons a test in this file produces; GATEWAY_MISMATCH, BAD_TOPIC and the encoder's
# TOO_LARGE are covered by the three functions above.
def test_every_reason_is_exercised():
    produced = {case[2] for case in CASES.values()}
    produced |= {R.GATEWAY_MISMATCH, R.BAD_TOPIC}
    assert produced == set(WireErrorReason)


def test_str_names_reason_and_path():
    err = WireError(R.BAD_VALUE, "recs[3].v", "too big")
    assert str(err) == "bad_value at recs[3].v: too big"
    assert str(WireError(R.NOT_JSON, "", "x")) == "not_json at <payload>: x"
    assert err.under("a").path == "a.recs[3].v"
    assert WireError(R.BAD_TYPE, "[2]", "x").under("ops").path == "ops[2]"


def test_batch_constructor_refuses_unnumbered_records():
    m = Measurement(receive_ms=1, source=Source("s", Bus.BLE), quantity="rssi", value=-60)
    with pytest.raises(WireError) as info:
        Batch("gw-1", None, 1, (m.with_seq(1), m))
    assert (info.value.reason, info.value.path) == (R.BAD_VALUE, "recs[1].seq")
