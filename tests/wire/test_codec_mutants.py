"""protocols/wire/codec.py: the cases mutation testing found unguarded (docs/testing.md).

``./dev mutate wire`` ran the codec against tests/wire and found ``decode_batch_partial`` (the
collector's "one bad record costs only itself") judged by no test of the contract at all,
and the encoders' boundaries (a payload of exactly ``max_bytes``, the comma between records)
and error paths unchecked. These tests pin them:

* ``decode_batch_partial`` agrees with ``decode_batch`` - same records for a good payload,
  the same error (reason, path, text) for a bad batch - and names each bad record exactly;
* every size and count limit is tried at the limit and one past it;
* every refusal's full text is checked, since that text is what an operator reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.wire import (
    MAX_RECORDS_PER_BATCH,
    Batch,
    Bus,
    Event,
    EventType,
    Measurement,
    PartialBatch,
    Quantity,
    RecordFault,
    Source,
    WireError,
    WireErrorReason,
    check_gateway,
    decode_batch,
    decode_batch_partial,
    encode_batch,
    encode_batch_from_encoded,
    encode_batches,
    encode_record,
    pack_batches,
)

from .test_wire_errors import CASES, DROP, EVENT, MEAS, batch, rec
from .wire_strategies import ids, ms, opt, record_lists

R = WireErrorReason
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60)
SRC = Source("modbus/bus1/3/pressure", Bus.MODBUS)


def reading(seq: int) -> Measurement:
    return Measurement(source=SRC, quantity=Quantity.PRESSURE, value=0.3, unit="MPa",
                       receive_ms=1, seq=seq)


def refusal(call: Any, *args: Any, **kw: Any) -> WireError:
    with pytest.raises(WireError) as info:
        call(*args, **kw)
    return info.value


def as_json(d: object) -> bytes:
    return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()


# -- decode_batch_partial agrees with decode_batch --------------------------------------------

@SETTINGS
@given(ids, opt(ids), ms, st.integers(0, 2**63 - 1), record_lists())
def test_a_good_payload_decodes_as_decode_batch_does(gw, site, sent_ms, epoch, records):
    payload = encode_batch(Batch(gw, site, sent_ms, tuple(records), epoch))
    assert decode_batch_partial(payload) == PartialBatch(gw, epoch, decode_batch(payload), ())


BATCH_CASES = {name: payload for name, (decode, payload, _, _) in CASES.items()
               if decode is decode_batch}


def plain(names: Iterable[object]) -> list[str]:
    """ASCII test ids (mutmut hands collected ids back to pytest one by one)."""
    return [re.sub(r"[^A-Za-z0-9]+", "-", str(n)).strip("-") for n in names]


@pytest.mark.parametrize("payload", BATCH_CASES.values(), ids=plain(BATCH_CASES))
def test_a_bad_payload_is_refused_or_split_as_decode_batch_says(payload: bytes) -> None:
    """Word for word the same refusal, either of the whole payload (the batch's own fault)
    or of its first bad record, beside the others."""
    whole = refusal(decode_batch, payload)
    try:
        partial = decode_batch_partial(payload)
    except WireError as got:
        assert (got.reason, got.path, str(got)) == (whole.reason, whole.path, str(whole))
        assert not whole.path.startswith("recs[") or whole.reason in (
            R.DUPLICATE_SEQ, R.NOT_FINITE, R.BAD_VALUE)  # seq twice, a NaN, seq 0
    else:
        assert whole.path.startswith("recs[")
        first = partial.faults[0].error
        assert (first.reason, first.path, str(first)) == (whole.reason, whole.path, str(whole))


# The batch's own faults, when decode_batch (which looks at the records first) says
# something else, or nothing covers them there.
HEADER_CASES = {
    "no ts": (batch(MEAS, ts=DROP), R.MISSING_FIELD, "ts", "required"),
    "no ts, no recs": (batch(ts=DROP, recs=DROP), R.MISSING_FIELD, "ts", "required"),
    "no recs": (batch(recs=DROP), R.MISSING_FIELD, "recs", "required"),
    "no gw": (batch(MEAS, gw=DROP), R.MISSING_FIELD, "gw", "required"),
    "recs a string": (batch(recs="x"), R.BAD_TYPE, "recs", "expected an array"),
    "one too many": (batch(*[{}] * (MAX_RECORDS_PER_BATCH + 1)), R.TOO_MANY_RECORDS, "recs",
                     f"{MAX_RECORDS_PER_BATCH + 1} > {MAX_RECORDS_PER_BATCH}"),
    "none": (batch(), R.EMPTY_BATCH, "recs", "a batch carries >= 1 record"),
    "unknown key": (batch(MEAS, extra=1), R.UNKNOWN_FIELD, "extra", None),
    "bad gw, bad records": (batch({"k": "x"}, gw="gw/1"), R.BAD_VALUE, "gw", None),
    "bad site, bad records": (batch({"k": "x"}, site="a b"), R.BAD_VALUE, "site", None),
    "bad ts, bad records": (batch({"k": "x"}, ts=-1), R.BAD_VALUE, "ts", None),
}


@pytest.mark.parametrize(("payload", "reason", "path", "message"), HEADER_CASES.values(),
                         ids=plain(HEADER_CASES))
def test_the_batch_s_own_faults_refuse_it_whole(payload, reason, path, message) -> None:
    got = refusal(decode_batch_partial, payload)
    assert (got.reason, got.path) == (reason, path)
    if message is not None:
        assert got.message == message


def test_exactly_the_maximum_number_of_records_is_a_batch() -> None:
    recs = [rec(MEAS, seq=i + 1) for i in range(MAX_RECORDS_PER_BATCH)]
    partial = decode_batch_partial(batch(*recs), max_bytes=10**7)
    assert partial.batch is not None and len(partial.batch.records) == MAX_RECORDS_PER_BATCH
    assert partial.faults == ()


def test_each_bad_record_is_named_and_the_rest_kept_with_the_header() -> None:
    bad_unit = rec(MEAS, seq=2, u="furlongs")
    not_a_record = [1, 2]
    no_kind = {"seq": 2**63 - 1, "x": "\ud800"}  # a lone surrogate: JSON can carry it
    payload = batch(rec(MEAS, seq=1), bad_unit, rec(EVENT, seq=3), not_a_record,
                    {"seq": 2**63 - 1, "x": "SURROGATE"}, site="site-7", ep="0000000000000007")
    payload = payload.replace(b'"SURROGATE"', b'"\\ud800"')
    partial = decode_batch_partial(payload)
    assert (partial.gateway_id, partial.epoch) == ("gw-1", 7)
    good = decode_batch(batch(rec(MEAS, seq=1), rec(EVENT, seq=3), site="site-7",
                              ep="0000000000000007"))
    assert partial.batch == good
    assert (good.site, good.sent_ms, good.epoch) == ("site-7", 1718000000000, 7)
    errors = [(f.position, f.seq, f.error.reason, f.error.path) for f in partial.faults]
    assert errors == [(1, 2, R.BAD_VALUE, "recs[1].u"), (3, None, R.BAD_TYPE, "recs[3]"),
                      (4, 2**63 - 1, R.MISSING_FIELD, "recs[4].k")]
    raws = [f.raw for f in partial.faults]
    assert raws[:2] == [as_json(bad_unit), b"[1,2]"]
    # Not encodable as UTF-8 JSON (the surrogate): kept as its repr, nothing lost, no crash.
    assert raws[2] == repr(no_kind).encode()
    assert all(isinstance(f, RecordFault) for f in partial.faults)


@pytest.mark.parametrize(("seq", "reported"), [
    (1, 1), (2**53, 2**53), (2**63 - 1, 2**63 - 1), (2**63, None), (0, None), (-1, None),
    (True, None), ("3", None), (1.0, None), (None, None),
])
def test_a_faulty_record_keeps_its_seq_only_when_the_seq_is_one(seq, reported) -> None:
    payload = batch(rec(MEAS, seq=9), rec(MEAS, seq=seq, u="furlongs"))
    (fault,) = decode_batch_partial(payload).faults
    assert (fault.position, fault.seq) == (1, reported)


def test_no_good_record_leaves_no_batch_but_every_fault() -> None:
    payload = batch({"k": "x"}, rec(MEAS, u="furlongs"), site=None, ep=DROP)
    partial = decode_batch_partial(payload)
    assert partial.batch is None and (partial.gateway_id, partial.epoch) == ("gw-1", 0)
    assert [(f.position, f.error.path) for f in partial.faults] == [(0, "recs[0].k"),
                                                                     (1, "recs[1].u")]


def test_a_duplicate_seq_is_the_batch_s_fault() -> None:
    payload = batch(rec(MEAS, seq=4), rec(MEAS, seq=4, u="furlongs"), rec(EVENT, seq=4))
    got = refusal(decode_batch_partial, payload)
    assert (got.reason, got.path) == (R.DUPLICATE_SEQ, "recs[1].seq")


# -- encoding: limits at the limit, and the words of each refusal -----------------------------

def test_a_payload_of_exactly_max_bytes_is_sent_one_byte_less_is_too_large() -> None:
    b = Batch("gw-1", None, 1, (reading(1), reading(2)))
    size = len(encode_batch(b))
    assert len(encode_batch(b, max_bytes=size)) == size
    err = refusal(encode_batch, b, max_bytes=size - 1)
    assert str(err) == f"too_large at <payload>: {size} bytes > {size - 1}"
    assert err.path == ""  # the whole payload
    fragments = [encode_record(r) for r in b.records]
    assert encode_batch_from_encoded("gw-1", None, 1, fragments, max_bytes=size) == \
        encode_batch(b)
    err = refusal(encode_batch_from_encoded, "gw-1", None, 1, fragments, max_bytes=size - 1)
    assert str(err) == f"too_large at <payload>: {size} bytes > {size - 1}"
    assert err.path == ""


def test_the_count_refusals_of_encode_batch_from_encoded() -> None:
    assert str(refusal(encode_batch_from_encoded, "gw-1", None, 1, [])) == \
        "empty_batch at recs: a batch carries >= 1 record"
    many = [encode_record(reading(i + 1)) for i in range(MAX_RECORDS_PER_BATCH + 1)]
    err = refusal(encode_batch_from_encoded, "gw-1", None, 1, many, max_bytes=10**9)
    n = MAX_RECORDS_PER_BATCH
    assert str(err) == f"too_many_records at recs: {n + 1} > {n} records"


def test_the_epoch_and_site_go_into_a_payload_built_from_stored_bytes() -> None:
    payload = encode_batch_from_encoded("gw-1", "site-7", 5, [encode_record(reading(1))],
                                        epoch=7)
    assert decode_batch(payload) == Batch("gw-1", "site-7", 5, (reading(1),), 7)


def test_packing_fills_each_payload_to_the_byte_and_counts_commas() -> None:
    records = [reading(i + 1) for i in range(7)]
    one = len(encode_record(records[0]))
    assert all(len(encode_record(r)) == one for r in records)
    overhead = len(encode_batch(Batch("gw-1", None, 1, records[:1]))) - one
    for per in (1, 2, 3):
        limit = overhead + per * one + (per - 1)  # `per` records and the commas between
        packed = pack_batches("gw-1", None, 1, records, max_bytes=limit)
        assert [len(p.seqs) for p in packed] == [per] * (7 // per) + ([7 % per] if 7 % per else [])
        assert len(packed[0].payload) == limit  # filled exactly, never past
        assert all(len(p.payload) <= limit for p in packed)
        assert [s for p in packed for s in p.seqs] == list(range(1, 8))
        assert [r for p in packed for r in decode_batch(p.payload).records] == records
        # one byte short of `per`: one record fewer in each payload
        if per > 1:
            fewer = pack_batches("gw-1", None, 1, records, max_bytes=limit - 1)
            assert len(fewer[0].seqs) == per - 1


def test_a_record_that_exactly_fits_alone_is_packed() -> None:
    alone = len(encode_batch(Batch("gw-1", None, 1, (reading(1),))))
    (packed,) = pack_batches("gw-1", None, 1, [reading(1)], max_bytes=alone)
    assert packed.seqs == (1,) and len(packed.payload) == alone
    err = refusal(pack_batches, "gw-1", None, 1, [reading(1)], max_bytes=alone - 1)
    one = len(encode_record(reading(1)))
    assert str(err) == (f"too_large at recs[0]: record of {one} bytes cannot fit a "
                        f"{alone - 1}-byte payload")


def test_max_records_bounds_and_packing_by_count() -> None:
    records = [reading(i + 1) for i in range(5)]
    assert [p.seqs for p in pack_batches("gw-1", None, 1, records, max_records=2)] == \
        [(1, 2), (3, 4), (5,)]
    assert len(pack_batches("gw-1", None, 1, records, max_records=MAX_RECORDS_PER_BATCH)) == 1
    for bad in (0, MAX_RECORDS_PER_BATCH + 1):
        with pytest.raises(ValueError, match=f"max_records must be in 1..{MAX_RECORDS_PER_BATCH}"):
            pack_batches("gw-1", None, 1, records, max_records=bad)
    assert pack_batches("gw-1", None, 1, []) == [] and encode_batches("gw-1", None, 1, []) == []
    payloads = encode_batches("gw-1", None, 1, records, max_records=2)  # passed on to packing
    assert [len(decode_batch(p).records) for p in payloads] == [2, 2, 1]


def test_a_seq_twice_in_one_call_names_the_second() -> None:
    err = refusal(pack_batches, "gw-1", None, 1, [reading(3), reading(4), reading(3)])
    assert str(err) == "duplicate_seq at recs[2].seq: seq 3 twice"


def test_something_that_is_not_a_record_is_refused_by_name() -> None:
    err = refusal(encode_record, "not a record")  # type: ignore[arg-type]
    assert str(err) == "bad_type at <payload>: expected an Event or a Measurement, not str"
    assert err.path == ""
    err = refusal(pack_batches, "gw-1", None, 1, [reading(1), 42])  # type: ignore[list-item]
    assert (err.reason, err.path) == (R.BAD_TYPE, "recs[1]")
    assert err.message == "expected an Event or a Measurement, not int"


def test_a_gateway_mismatch_says_both_ids() -> None:
    b = decode_batch(batch(MEAS))
    err = refusal(check_gateway, "gw-2", b)
    assert str(err) == "gateway_mismatch at gw: payload says 'gw-1', topic says 'gw-2'"
    check_gateway("gw-1", decode_batch_partial(batch(MEAS)))


def test_an_event_survives_the_round_trip_with_every_field() -> None:
    e = Event(source=Source("panel/1-1/1", Bus.GB26875, system_type=1, system_address=1,
                            component_type=21, component_address=1, description="三层"),
              type=EventType.FIRE_ALARM, receive_ms=5, seq=3, source_ms=4, detail="d")
    assert decode_batch(encode_batch(Batch("gw-1", None, 1, (e,)))).records == (e,)


def test_an_unnumbered_record_is_refused_with_the_way_out() -> None:
    err = refusal(encode_record, reading(1).with_seq(0))
    assert str(err) == "bad_value at seq: seq 0 is unassigned: number records with with_seq()"
    err = refusal(encode_batches, "gw-1", None, 1, [reading(1), reading(1).with_seq(0)])
    assert (err.reason, err.path) == (R.BAD_VALUE, "recs[1].seq")


@pytest.mark.parametrize(("site", "sent_ms", "epoch", "path"), [
    ("a b", 1, 0, "site"), (None, -1, 0, "ts"), (None, 1, -1, "ep"), (None, 1, 2**63, "ep"),
])
def test_a_bad_header_is_refused_by_its_key(site, sent_ms, epoch, path) -> None:
    for encode in (
        lambda: encode_batch(Batch("gw-1", site, sent_ms, (reading(1),), epoch)),
        lambda: encode_batches("gw-1", site, sent_ms, [reading(1)], epoch=epoch),
        lambda: encode_batch_from_encoded("gw-1", site, sent_ms, [encode_record(reading(1))],
                                          epoch=epoch),
    ):
        err = refusal(encode)
        assert (err.reason in (R.BAD_VALUE, R.BAD_TYPE), err.path) == (True, path), str(err)
