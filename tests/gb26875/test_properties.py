"""Property tests: any bytes give frames or typed errors and nothing else, never hang, keep
memory bounded, and do not depend on chunking; any object round-trips."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.gb26875 import (
    SPECS,
    AnalogValue,
    ApplicationData,
    ComponentAddress,
    ComponentState,
    ComponentStatus,
    DecodeError,
    Frame,
    RawApplicationData,
    StreamDecoder,
    SystemState,
    SystemStatus,
    TimeLabel,
    decode_adu,
    decode_frame,
    encode_adu,
    encode_frame,
)

from .golden import all_frames

GOLDEN = [raw for _, raw in all_frames()]
# Byte soup biased towards the protocol's own markers, so resync paths are exercised.
SOUP = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(
    [b"@@", b"##", b"@", b"#", b"\x00\x04", *GOLDEN])), max_size=30).map(b"".join)


def _collect(d: StreamDecoder, chunks: list[bytes]) -> list[Frame | DecodeError]:
    out: list[Frame | DecodeError] = []
    for c in chunks:
        out += d.feed(c)
        assert d.buffered <= 30 + d.profile.max_adu + len(c)
    return out + d.close()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=SOUP, cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=8))
def test_stream_yields_only_frames_or_typed_errors(data: bytes, cuts: list[int]) -> None:
    d = StreamDecoder()
    whole = _collect(d, [data])
    assert all(isinstance(e, Frame | DecodeError) for e in whole)
    # Every input byte is accounted for: in a frame or in exactly one error.
    assert sum(30 + len(e.adu) if isinstance(e, Frame) else len(e.data) for e in whole) == len(data)
    assert d.frames == sum(isinstance(e, Frame) for e in whole)
    assert sum(d.errors.values()) == sum(isinstance(e, DecodeError) for e in whole)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    chunked = _collect(StreamDecoder(), chunks)
    assert [e for e in chunked if isinstance(e, Frame)] == [
        e for e in whole if isinstance(e, Frame)]


@settings(max_examples=300)
@given(st.binary(max_size=1200))
def test_frame_and_adu_decoders_accept_any_bytes(data: bytes) -> None:
    try:
        frame = decode_frame(data)
    except DecodeError:
        pass
    else:
        assert encode_frame(frame) == data
    try:
        adu = decode_adu(data)
    except DecodeError:
        return
    if adu is not None:
        assert isinstance(adu, ApplicationData | RawApplicationData)


def test_random_bytes_never_hang_on_large_input() -> None:
    import random

    rng = random.Random(7)
    blob = bytes(rng.getrandbits(8) for _ in range(200_000)) + b"@@" * 5000
    d = StreamDecoder()
    for i in range(0, len(blob), 4096):
        d.feed(blob[i:i + 4096])
        assert d.buffered <= 30 + 1024 + 4096
    d.close()
    assert d.bytes_in == len(blob)


u8 = st.integers(0, 255)
times = st.builds(TimeLabel, st.integers(0, 59), st.integers(0, 59), st.integers(0, 23),
                  st.integers(1, 28), st.integers(1, 12), st.integers(0, 99))
addrs = st.binary(min_size=4, max_size=4).map(ComponentAddress)
text = st.text(st.characters(codec="gb18030", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
               max_size=10).filter(lambda s: len(s.encode("gb18030")) <= 31)


@settings(max_examples=200)
@given(st.lists(st.builds(SystemStatus, u8, u8, st.integers(0, 0xFFFF).map(SystemState), times),
                min_size=0, max_size=102))
def test_system_state_roundtrip(objs: list[SystemStatus]) -> None:
    adu = ApplicationData(1, tuple(objs))
    assert decode_adu(encode_adu(adu)) == adu


@settings(max_examples=200)
@given(st.lists(st.builds(ComponentStatus, u8, u8, u8, addrs,
                          st.integers(0, 0xFFFF).map(ComponentState), text, times),
                min_size=1, max_size=22))
def test_component_state_roundtrip(objs: list[ComponentStatus]) -> None:
    adu = ApplicationData(2, tuple(objs))
    assert decode_adu(encode_adu(adu)) == adu


@settings(max_examples=200)
@given(st.none() | times, st.integers(0, 63).flatmap(lambda n: st.lists(st.builds(
    AnalogValue, u8, u8, u8, addrs, u8, st.integers(-32768, 32767)), min_size=n, max_size=n)))
def test_analog_roundtrip(time: TimeLabel | None, objs: list[AnalogValue]) -> None:
    import dataclasses

    adu = ApplicationData(3, tuple(dataclasses.replace(o, time=time) for o in objs))
    assert decode_adu(encode_adu(adu)) == adu


@given(st.sampled_from(sorted(SPECS)), st.binary(max_size=64))
def test_known_type_with_random_body(mark: int, body: bytes) -> None:
    data = bytes((mark, 1)) + body
    try:
        adu = decode_adu(data)
    except DecodeError:
        return
    assert adu is not None and encode_adu(adu, max_adu=0xFFFF) == data
