"""Properties: decoders return an object or a WireError for anything; round trips hold;
encode_batches splits correctly. No timing here (deadline=None: the machines are shared)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.wire import (
    MAX_RECORDS_PER_BATCH,
    Batch,
    Record,
    WireError,
    WireErrorReason,
    decode_ack,
    decode_batch,
    decode_command,
    decode_health,
    decode_status,
    encode_ack,
    encode_batch,
    encode_batches,
    encode_command,
    encode_health,
    encode_record,
    encode_status,
    pack_batches,
)

from .wire_strategies import (
    acks,
    any_json,
    commands,
    healths,
    ids,
    ms,
    opt,
    record_lists,
    statuses,
)

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

CODECS: list[tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] = [
    (decode_batch, encode_batch),
    (decode_status, encode_status),
    (decode_health, encode_health),
    (decode_command, encode_command),
    (decode_ack, encode_ack),
]


def object_or_wire_error(payload: bytes) -> None:
    """Every decoder returns an object or raises WireError; an accepted payload re-encodes
    to a canonical one that decodes to the same object."""
    for decode, encode in CODECS:
        try:
            obj = decode(payload)
        except WireError as e:
            assert isinstance(e.reason, WireErrorReason)
            continue
        canonical = encode(obj)
        assert decode(canonical) == obj
        assert encode(decode(canonical)) == canonical


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes(payload):
    object_or_wire_error(payload)


@SETTINGS
@given(any_json)
def test_any_json_value(value):
    object_or_wire_error(json.dumps(value).encode())
    object_or_wire_error(json.dumps({"v": 1, "recs": value, "gw": "g", "ts": 1}).encode())


# -- valid payloads, then damaged -------------------------------------------------------------

batches = st.builds(Batch, ids, opt(ids), ms, record_lists(max_size=8).map(tuple))


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*prefix, i))
    return out


def replaced(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    copy = list(obj) if isinstance(obj, list) else dict(obj)
    copy[head] = replaced(obj[head], tuple(rest), value)
    return copy


@SETTINGS
@given(batches, st.data())
def test_a_valid_batch_with_any_value_anywhere(batch, data):
    obj = json.loads(encode_batch(batch))
    path = data.draw(st.sampled_from(paths(obj)))
    value = data.draw(any_json | st.sampled_from([True, 1.0, -1, 2**53, "", None, [], {}]))
    object_or_wire_error(json.dumps(replaced(obj, path, value), ensure_ascii=False).encode())


@SETTINGS
@given(batches, st.data())
def test_a_valid_batch_with_damaged_bytes(batch, data):
    payload = bytearray(encode_batch(batch))
    i = data.draw(st.integers(0, len(payload) - 1))
    action = data.draw(st.sampled_from(["flip", "drop", "insert", "cut"]))
    if action == "flip":
        payload[i] ^= data.draw(st.integers(1, 255))
    elif action == "drop":
        del payload[i]
    elif action == "insert":
        payload.insert(i, data.draw(st.integers(0, 255)))
    else:
        del payload[i:]
    object_or_wire_error(bytes(payload))


# -- round trips ----------------------------------------------------------------------------


@SETTINGS
@given(batches)
def test_batch_round_trip(batch):
    payload = encode_batch(batch)
    assert decode_batch(payload) == batch
    assert encode_batch(decode_batch(payload)) == payload
    # The record fragments are the records' part of the payload, byte for byte.
    assert b",".join(encode_record(r) for r in batch.records) in payload


@SETTINGS
@given(st.one_of(statuses, healths, commands, acks()))
def test_message_round_trip(message):
    for decode, encode in CODECS:
        try:
            payload = encode(message)
        except AttributeError:
            continue  # not this codec's message type
        assert decode(payload) == message
        assert encode(decode(payload)) == payload
        return
    raise AssertionError(f"no codec for {type(message).__name__}")


# -- splitting --------------------------------------------------------------------------------


@SETTINGS
@given(
    ids,
    opt(ids),
    ms,
    record_lists(min_size=0, max_size=40),
    st.integers(300, 4000),
    st.integers(1, MAX_RECORDS_PER_BATCH),
)
def test_encode_batches_splits_greedily_in_order(gw, site, sent_ms, records, max_bytes, max_recs):
    max_recs = min(max_recs, 7)  # small enough to be exercised by 40 records
    try:
        packed = pack_batches(gw, site, sent_ms, records, max_bytes=max_bytes, max_records=max_recs)
    except WireError as e:
        assert e.reason is WireErrorReason.TOO_LARGE
        index = int(e.path.removeprefix("recs[").removesuffix("]"))
        alone = encode_batches(gw, site, sent_ms, [records[index]], max_bytes=10**6)[0]
        assert len(alone) > max_bytes
        return
    payloads = [p.payload for p in packed]
    assert payloads == encode_batches(
        gw, site, sent_ms, records, max_bytes=max_bytes, max_records=max_recs
    )
    assert (payloads == []) == (records == [])
    decoded: list[Record] = []
    for p in packed:
        assert len(p.payload) <= max_bytes
        batch = decode_batch(p.payload, max_bytes=max_bytes)
        assert (batch.gateway_id, batch.site, batch.sent_ms) == (gw, site, sent_ms)
        assert len(batch.records) <= max_recs
        assert tuple(r.seq for r in batch.records) == p.seqs
        decoded.extend(batch.records)
    assert decoded == records
    # Greedy: the first record of the next payload would not have fitted into the previous.
    start = 0
    for prev in packed[:-1]:
        count = len(prev.seqs)
        grown = Batch(gw, site, sent_ms, tuple(records[start : start + count + 1]))
        assert count == max_recs or len(encode_batch(grown, max_bytes=10**6)) > max_bytes
        start += count


@SETTINGS
@given(record_lists(min_size=2, max_size=5))
def test_encode_batches_refuses_duplicates_and_unnumbered(records):
    n = len(records)
    try:
        encode_batches("gw-1", None, 0, [*records, records[0]])
    except WireError as e:
        assert (e.reason, e.path) == (WireErrorReason.DUPLICATE_SEQ, f"recs[{n}].seq")
    else:
        raise AssertionError("duplicate seq accepted")
    try:
        encode_batches("gw-1", None, 0, [*records, records[0].with_seq(0)])
    except WireError as e:
        assert (e.reason, e.path) == (WireErrorReason.BAD_VALUE, f"recs[{n}].seq")
    else:
        raise AssertionError("seq 0 accepted")
