"""encode_batch_from_encoded: the outbox's path from stored record bytes to a payload.

It must be byte-identical to encode_batch of the same records (so the collector cannot tell
which path built a payload) and refuse what encode_batch refuses for count and size."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from protocols.wire import (
    MAX_RECORDS_PER_BATCH,
    Batch,
    Bus,
    Measurement,
    Quantity,
    Source,
    WireError,
    WireErrorReason,
    decode_batch,
    encode_batch,
    encode_batch_from_encoded,
    encode_record,
)

from .wire_strategies import ids, ms, opt, record_lists

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(ids, opt(ids), ms, record_lists())
def test_byte_identical_to_encode_batch(gw, site, sent_ms, records):
    expected = encode_batch(Batch(gw, site, sent_ms, tuple(records)))
    got = encode_batch_from_encoded(gw, site, sent_ms, [encode_record(r) for r in records])
    assert got == expected
    assert decode_batch(got).records == tuple(records)


def _fragment(seq: int) -> bytes:
    src = Source("modbus/bus1/3/pressure", Bus.MODBUS)
    return encode_record(
        Measurement(source=src, quantity=Quantity.PRESSURE, value=0.3, unit="MPa",
                    receive_ms=1, seq=seq)
    )


def test_refuses_an_empty_batch():
    with pytest.raises(WireError) as e:
        encode_batch_from_encoded("gw-1", None, 1, [])
    assert e.value.reason is WireErrorReason.EMPTY_BATCH


def test_refuses_too_many_records():
    fragments = [_fragment(i + 1) for i in range(MAX_RECORDS_PER_BATCH + 1)]
    with pytest.raises(WireError) as e:
        encode_batch_from_encoded("gw-1", None, 1, fragments, max_bytes=10**9)
    assert e.value.reason is WireErrorReason.TOO_MANY_RECORDS
    ok = encode_batch_from_encoded("gw-1", None, 1, fragments[:-1], max_bytes=10**9)
    assert len(decode_batch(ok, max_bytes=10**9).records) == MAX_RECORDS_PER_BATCH


def test_refuses_a_payload_over_max_bytes_and_accepts_one_at_it():
    fragments = [_fragment(1), _fragment(2)]
    exact = len(encode_batch_from_encoded("gw-1", "site-1", 5, fragments))
    assert len(encode_batch_from_encoded("gw-1", "site-1", 5, fragments, max_bytes=exact)) == exact
    with pytest.raises(WireError) as e:
        encode_batch_from_encoded("gw-1", "site-1", 5, fragments, max_bytes=exact - 1)
    assert e.value.reason is WireErrorReason.TOO_LARGE


def test_checks_the_header_like_encode_batch():
    with pytest.raises(WireError) as e:
        encode_batch_from_encoded("bad/gw", None, 1, [_fragment(1)])
    assert e.value.path == "gw"
