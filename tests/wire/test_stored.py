"""The ``stored`` confirmation (collector -> gateway): what a collector wrote, the gateway's
deletion point (docs/wire-protocol.md, "Stored")."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.wire import (
    Channel,
    CommandName,
    Stored,
    WireError,
    WireErrorReason,
    decode_stored,
    encode_stored,
    gateway_subscriptions,
    parse_topic,
    seq_ranges,
    split_ranges,
    topic,
)

NOW = 1_718_000_000_000


def test_round_trip_and_membership() -> None:
    s = Stored("gw-1", 0x5F0C2A91D3B7E468, ((1041, 1044), (1050, 1050)), NOW, "collector-1")
    payload = encode_stored(s)
    assert json.loads(payload) == {"v": 1, "gw": "gw-1", "ep": "5f0c2a91d3b7e468",
                                   "seqs": [[1041, 1044], [1050, 1050]], "ts": NOW,
                                   "by": "collector-1"}
    assert decode_stored(payload) == s
    assert [seq in s for seq in (1040, 1041, 1044, 1045, 1050)] == [False, True, True, False,
                                                                    True]
    assert s.count == 5
    plain = Stored("gw-1", 0, ((1, 1),), NOW)
    assert b'"ep"' not in encode_stored(plain) and decode_stored(encode_stored(plain)) == plain


@pytest.mark.parametrize(("seqs", "reason", "path"), [
    ("[]", WireErrorReason.BAD_VALUE, "seqs"),
    ("[[3,1]]", WireErrorReason.BAD_VALUE, "seqs[0]"),
    ("[[0,1]]", WireErrorReason.BAD_VALUE, "seqs[0]"),
    ("[[1,2],[3,4]]", WireErrorReason.BAD_VALUE, "seqs[1]"),   # adjacent: one range
    ("[[5,6],[1,2]]", WireErrorReason.BAD_VALUE, "seqs[1]"),   # not sorted
    ("[[1,2],[2,4]]", WireErrorReason.BAD_VALUE, "seqs[1]"),   # overlapping
    ("[[1]]", WireErrorReason.BAD_TYPE, "seqs[0]"),
    ('[["1",2]]', WireErrorReason.BAD_TYPE, "seqs[0]"),
    ("[[1,9007199254740992]]", WireErrorReason.BAD_VALUE, "seqs[0]"),
    ('{"a":1}', WireErrorReason.BAD_TYPE, "seqs"),
])
def test_bad_ranges_are_refused_with_their_path(seqs: str, reason: WireErrorReason,
                                                 path: str) -> None:
    payload = f'{{"v":1,"gw":"gw-1","seqs":{seqs},"ts":{NOW}}}'.encode()
    with pytest.raises(WireError) as info:
        decode_stored(payload)
    assert (info.value.reason, info.value.path) == (reason, path)


def test_unknown_keys_and_bad_epoch_are_refused() -> None:
    with pytest.raises(WireError) as info:
        decode_stored(f'{{"v":1,"gw":"g","seqs":[[1,1]],"ts":{NOW},"x":1}}'.encode())
    assert info.value.reason is WireErrorReason.UNKNOWN_FIELD
    with pytest.raises(WireError) as info:
        decode_stored(f'{{"v":1,"gw":"g","ep":5,"seqs":[[1,1]],"ts":{NOW}}}'.encode())
    assert info.value.path == "ep"


@given(st.sets(st.integers(1, 10_000), max_size=300))
def test_seq_ranges_cover_exactly_the_seqs(seqs: set[int]) -> None:
    ranges = seq_ranges(seqs)
    assert {s for a, b in ranges for s in range(a, b + 1)} == seqs
    if ranges:  # valid as a message, also when split
        for part in split_ranges(ranges, limit=7):
            assert len(part) <= 7
            Stored("gw-1", 1, tuple(part), NOW)


def test_the_channel_and_the_resend_command() -> None:
    assert parse_topic(topic("gw-1", Channel.STORED)) == ("gw-1", Channel.STORED)
    assert [s.filter for s in gateway_subscriptions("gw-1")] == [
        "firegate/v1/gw-1/cmd", "firegate/v1/gw-1/stored"]
    assert CommandName("resend") is CommandName.RESEND
