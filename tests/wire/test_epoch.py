"""The store epoch (``ep``) in batches and health: a random id of the sender's outbox or flash
ring, so a gateway whose store is new (seq starting again at 1) is not taken for a repeat of
its previous life (docs/wire-protocol.md, "Epochs")."""

from __future__ import annotations

import json

import pytest

from protocols.wire import (
    Batch,
    Bus,
    Health,
    Measurement,
    Quantity,
    Source,
    WireError,
    WireErrorReason,
    decode_batch,
    decode_batch_partial,
    decode_health,
    encode_batch,
    encode_batch_from_encoded,
    encode_batches,
    encode_health,
    encode_record,
)

NOW = 1_718_000_000_000
EPOCH = 0x1F2E3D4C5B6A7988
READING = Measurement(source=Source("modbus/bus1/3/pressure", Bus.MODBUS),
                      quantity=Quantity.PRESSURE, value=0.3, receive_ms=NOW, unit="MPa", seq=1)


def test_a_batch_carries_its_epoch_as_16_hex_digits() -> None:
    (payload,) = encode_batches("gw-1", "site-1", NOW, [READING], epoch=EPOCH)
    assert json.loads(payload)["ep"] == "1f2e3d4c5b6a7988"
    assert payload.index(b'"ep"') < payload.index(b'"ts"')  # header keys in contract order
    batch = decode_batch(payload)
    assert batch.epoch == EPOCH
    assert decode_batch_partial(payload).batch == batch
    assert encode_batch(batch) == payload
    assert encode_batch_from_encoded("gw-1", "site-1", NOW, [encode_record(READING)],
                                     epoch=EPOCH) == payload


def test_without_an_epoch_the_batch_is_as_before() -> None:
    (payload,) = encode_batches("gw-1", None, NOW, [READING])
    assert b'"ep"' not in payload
    assert decode_batch(payload).epoch == 0  # a sender of before epochs: epoch 0


@pytest.mark.parametrize(("ep", "reason"), [
    ('"0000000000000000"', WireErrorReason.BAD_VALUE),   # 0 is "none": say it by leaving ep out
    ('"8000000000000000"', WireErrorReason.BAD_VALUE),   # above 2**63-1
    ('"1F2E3D4C5B6A7988"', WireErrorReason.BAD_VALUE),   # upper case
    ('"1f2e3d4c"', WireErrorReason.BAD_VALUE),
    ("12345", WireErrorReason.BAD_TYPE),
    ("null", WireErrorReason.BAD_TYPE),
])
def test_a_bad_epoch_refuses_the_batch(ep: str, reason: WireErrorReason) -> None:
    (payload,) = encode_batches("gw-1", None, NOW, [READING], epoch=EPOCH)
    bad = payload.replace(b'"1f2e3d4c5b6a7988"', ep.encode())
    for decode in (decode_batch, decode_batch_partial):
        with pytest.raises(WireError) as info:
            decode(bad)
        assert (info.value.reason, info.value.path) == (reason, "ep")


def test_the_python_side_checks_the_range() -> None:
    with pytest.raises(WireError):
        Batch("gw-1", None, NOW, (READING,), epoch=2**63)
    with pytest.raises(WireError):
        Batch("gw-1", None, NOW, (READING,), epoch=-1)


def test_health_names_the_epoch_of_its_last_seq() -> None:
    health = Health(gateway_id="gw-1", ts_ms=NOW, uptime_s=1.0, version="1.0", outbox_depth=0,
                    last_seq=7, epoch=EPOCH)
    payload = encode_health(health)
    assert json.loads(payload)["ep"] == "1f2e3d4c5b6a7988"
    assert decode_health(payload) == health
    plain = Health(gateway_id="gw-1", ts_ms=NOW, uptime_s=1.0, version="1.0", outbox_depth=0,
                   last_seq=7)
    assert b'"ep"' not in encode_health(plain) and decode_health(encode_health(plain)).epoch == 0
