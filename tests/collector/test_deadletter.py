"""DeadLetters: refused messages kept with their reason, bounded, counted, persistent."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.deadletter import DeadLetters
from protocols.wire import (
    MAX_PAYLOAD_BYTES,
    WireError,
    WireErrorReason,
    check_gateway,
    decode_batch,
    parse_topic,
)

TOPIC = "firegate/v1/gw-0001/records"

# Real refusals from the contract's decoder: (payload, the reason it must give).
BAD = [
    (b"\xff\xfe", WireErrorReason.NOT_UTF8),
    (b"{not json", WireErrorReason.NOT_JSON),
    (b"[1, 2]", WireErrorReason.NOT_OBJECT),
    (b'{"v": 2, "gw": "gw-0001", "ts": 1, "recs": []}', WireErrorReason.UNSUPPORTED_VERSION),
    (b'{"v": 1, "gw": "gw-0001", "ts": 1, "recs": []}', WireErrorReason.EMPTY_BATCH),
    (b'{"v": 1, "gw": "gw-0001", "ts": 1, "recs": [{"seq": 1, "k": "m", "rt": 1, '
     b'"src": {"id": "a", "bus": "modbus"}, "q": "pressure", "v": 1, "u": "psi"}]}',
     WireErrorReason.BAD_VALUE),
    (b"x" * (MAX_PAYLOAD_BYTES + 1), WireErrorReason.TOO_LARGE),
]


def _refuse(payload: bytes) -> WireError:
    try:
        decode_batch(payload)
    except WireError as e:
        return e
    raise AssertionError("decoded")


def test_keeps_refusals_with_reason_and_path(tmp_path: Path) -> None:
    dl = DeadLetters(tmp_path / "dead.sqlite")
    for i, (payload, reason) in enumerate(BAD):
        err = _refuse(payload)
        assert err.reason is reason
        dl.add(TOPIC, payload, err.reason, err.path, now_ms=1000 + i)
    counts = dl.count_by_reason()
    assert counts == {r.value: 1 for _, r in BAD}
    assert dl.total == len(BAD) and len(dl) == len(BAD) and dl.evicted == 0
    newest = dl.recent(2)
    assert [d.reason for d in newest] == ["too_large", "bad_value"]
    assert newest[1].path == "recs[0].u"
    assert newest[1].payload == BAD[5][0] and not newest[1].truncated
    assert newest[0].size == MAX_PAYLOAD_BYTES + 1 and newest[0].truncated
    assert len(newest[0].payload) == MAX_PAYLOAD_BYTES  # bounded
    assert newest[0].at_ms == 1000 + len(BAD) - 1 and newest[0].topic == TOPIC
    dl.close()
    dl.close()


def test_gateway_mismatch_and_topic_refusals(tmp_path: Path) -> None:
    dl = DeadLetters(tmp_path / "dead.sqlite")
    payload = (b'{"v":1,"gw":"gw-9999","ts":1,"recs":[{"seq":1,"k":"m","rt":1,'
               b'"src":{"id":"a","bus":"modbus"},"q":"pressure","v":1,"u":"MPa"}]}')
    with pytest.raises(WireError) as mismatch:
        check_gateway(TOPIC, decode_batch(payload))
    dl.add(TOPIC, payload, mismatch.value.reason, mismatch.value.path, 5)
    with pytest.raises(WireError) as bad_topic:
        parse_topic("firegate/v1/+bad/records")
    dl.add("firegate/v1/+bad/records", b"{}", bad_topic.value.reason, None, 6)
    assert dl.count_by_reason() == {"bad_topic": 1, "gateway_mismatch": 1}
    assert dl.recent(1)[0].path is None
    dl.add(TOPIC, b"\x00" * 10, "sink_refused", "", 7)  # the pipeline's own reason; no path
    assert dl.recent(1)[0].reason == "sink_refused" and dl.recent(1)[0].path is None
    dl.close()


def test_bounded_evicts_oldest_and_counts_survive(tmp_path: Path) -> None:
    path = tmp_path / "dead.sqlite"
    dl = DeadLetters(path, max_rows=5, max_payload_bytes=4)
    for i in range(12):
        dl.add(TOPIC, f"payload-{i}".encode(), "not_json" if i % 3 else "bad_type", None, i)
    assert len(dl) == 5 and dl.evicted == 7
    assert [d.at_ms for d in dl.recent(100)] == [11, 10, 9, 8, 7]
    assert all(d.payload == b"payl" and d.truncated for d in dl.recent(100))
    assert dl.count_by_reason() == {"bad_type": 4, "not_json": 8}  # evicted ones still count
    dl.close()
    again = DeadLetters(path, max_rows=5)
    assert again.count_by_reason() == {"bad_type": 4, "not_json": 8}
    assert again.evicted == 7 and len(again) == 5
    again.add(TOPIC, b"x", "not_json", None, 12)
    assert again.evicted == 8 and again.recent(1)[0].at_ms == 12
    assert again.recent(0) == []
    again.close()


def test_refuses_a_useless_bound(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DeadLetters(tmp_path / "d.sqlite", max_rows=0)
