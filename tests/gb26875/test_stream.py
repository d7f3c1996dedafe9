"""Stream decoding of every golden frame: whole, byte by byte, split at every offset, with
garbage around it, and corrupted: the same frames come out, and each corruption gives exactly
one counted error and a clean resync."""

from __future__ import annotations

import pytest

from protocols.gb26875 import DecodeError, ErrorKind, Frame, StreamDecoder, decode_frame

from .golden import all_frames

FRAMES = all_frames()
IDS = [name for name, _ in FRAMES]
RAW = [raw for _, raw in FRAMES]
# Neighbours for corruption tests: a small confirm before, a clock sync after.
BEFORE = RAW[1]  # reference K2 (confirm, 30 bytes)
AFTER = RAW[0]  # reference K1 (clock sync, 38 bytes)


def run(chunks: list[bytes], decoder: StreamDecoder | None = None) -> tuple[
        list[Frame], list[DecodeError], StreamDecoder]:
    d = decoder or StreamDecoder()
    out: list[Frame | DecodeError] = []
    for c in chunks:
        out += d.feed(c)
    out += d.close()
    frames = [e for e in out if isinstance(e, Frame)]
    errors = [e for e in out if isinstance(e, DecodeError)]
    assert len(frames) + len(errors) == len(out)
    return frames, errors, d


@pytest.mark.parametrize("raw", RAW, ids=IDS)
def test_whole_bytewise_and_every_split(raw: bytes) -> None:
    expected = decode_frame(raw)
    assert run([raw])[:2] == ([expected], [])
    assert run([bytes([b]) for b in raw])[:2] == ([expected], [])
    for cut in range(1, len(raw)):
        assert run([raw[:cut], raw[cut:]])[:2] == ([expected], []), cut


@pytest.mark.parametrize("raw", RAW, ids=IDS)
def test_garbage_before_between_and_after(raw: bytes) -> None:
    expected = decode_frame(raw)
    for junk in (b"\x00", b"\xff\xfe garbage ", b"@", b"#@#", b"@@\x01", bytes(range(256))):
        stream = junk + raw + junk + raw + junk
        frames, errors, d = run([stream])
        assert frames == [expected, expected], junk
        assert sum(len(e.data) for e in errors) == 3 * len(junk)
        assert all(e.kind in ErrorKind for e in errors)
        assert sum(d.errors.values()) == len(errors)
        frames2, errors2, _ = run([bytes([b]) for b in stream])
        assert frames2 == frames and errors2 == errors, "chunking changes nothing"


def _one_error(stream: bytes, kinds: set[ErrorKind], raw: bytes) -> None:
    for chunks in ([stream], [bytes([b]) for b in stream]):
        frames, errors, d = run(chunks)
        assert frames == [decode_frame(BEFORE), decode_frame(AFTER)], raw.hex()
        assert len(errors) == 1, errors
        assert errors[0].kind in kinds, errors
        assert sum(d.errors.values()) == 1 and d.errors[errors[0].kind] == 1


@pytest.mark.parametrize("raw", RAW, ids=IDS)
def test_corruptions_give_one_error_and_resync(raw: bytes) -> None:
    bad_sum = raw[:-3] + bytes(((raw[-3] + 1) & 0xFF,)) + raw[-2:]
    _one_error(BEFORE + bad_sum + AFTER, {ErrorKind.BAD_CHECKSUM}, raw)
    bad_body = bytearray(raw)
    bad_body[20] ^= 0x01
    _one_error(BEFORE + bytes(bad_body) + AFTER, {ErrorKind.BAD_CHECKSUM}, raw)
    bad_end = raw[:-1] + b"\x00"
    _one_error(BEFORE + bad_end + AFTER, {ErrorKind.BAD_END_MARKER}, raw)
    bad_start = b"\x00" + raw[1:]
    _one_error(BEFORE + bad_start + AFTER, set(ErrorKind), raw)
    too_long = raw[:24] + (2000).to_bytes(2, "little") + raw[26:]
    _one_error(BEFORE + too_long + AFTER, {ErrorKind.BAD_LENGTH}, raw)
    longer = raw[:24] + (len(raw) - 30 + 5).to_bytes(2, "little") + raw[26:]
    _one_error(BEFORE + longer + AFTER, {ErrorKind.BAD_LENGTH, ErrorKind.BAD_END_MARKER}, raw)
    for cut in range(1, len(raw) - 1, 7):
        _one_error(BEFORE + raw[:cut] + AFTER, set(ErrorKind), raw)


def test_truncated_at_end_of_stream() -> None:
    frames, errors, _ = run([AFTER + BEFORE[:-4]])
    assert frames == [decode_frame(AFTER)]
    assert [e.kind for e in errors] == [ErrorKind.TRUNCATED]
    assert errors[0].offset == len(AFTER) and errors[0].data == BEFORE[:-4]


def test_bad_checksum_reported_immediately_with_serial_for_deny() -> None:
    d = StreamDecoder()
    bad = AFTER[:-3] + b"\x00" + AFTER[-2:]
    (err,) = d.feed(bad)
    assert isinstance(err, DecodeError) and err.kind is ErrorKind.BAD_CHECKSUM
    assert err.offset == 0 and err.data == bad
    assert d.buffered == 0


def test_corrupt_length_does_not_hold_back_the_next_frame() -> None:
    d = StreamDecoder()
    long_claim = BEFORE[:24] + (900).to_bytes(2, "little") + BEFORE[26:]
    out = d.feed(long_claim + AFTER)  # the 900-byte frame will never complete
    assert [type(e) for e in out] == [DecodeError, Frame]
    assert out[1] == decode_frame(AFTER)


def test_garbage_reported_on_flush_and_in_bounded_errors() -> None:
    d = StreamDecoder(max_error_bytes=100)
    out = d.feed(b"\x00" * 250)
    assert [len(e.data) for e in out if isinstance(e, DecodeError)] == [100, 100]
    (rest,) = d.flush()
    assert isinstance(rest, DecodeError) and len(rest.data) == 50 and rest.offset == 200
    assert d.flush() == [] and d.errors[ErrorKind.GARBAGE] == 3


def test_buffer_stays_bounded() -> None:
    d = StreamDecoder()
    for _ in range(200):
        d.feed(b"@@" + b"\x00" * 22 + b"\x00\x04" + b"\x02" + b"\xaa" * 997)
        assert d.buffered <= 30 + 1024 + 1024
    assert d.bytes_in == 200 * 1024


def test_at_sign_serial_is_not_confused_with_a_stray_marker() -> None:
    # Serial 0x4040 puts "@@@@" at the start of the frame.
    raw = bytearray(AFTER)
    raw[2:4] = b"@@"
    raw[-3] = sum(raw[2:-3]) & 0xFF
    frames, errors, _ = run([b"@" + bytes(raw)])
    assert [f.serial for f in frames] == [0x4040] and len(errors) == 1
    assert errors[0].data == b"@"
