"""Frames (数据包, GB/T 26875.3-2011 §6.6, 表1): encode, decode and the checksum.

Layout, 1-based as in the standard::

    1-2   @@ start marker         13-18 source address (6, low byte first)
    3-4   serial (uint16 LE)      19-24 destination address (6, low byte first)
    5-6   version: main, user     25-26 ADU length L (uint16 LE, <= 1024)
    7-12  time label              27    command byte
    28..27+L ADU                  28+L  checksum   29+L..30+L  ## end marker

There is no escaping: ``@@`` and ``##`` may occur inside the ADU, so the length field, not a search
for ``##``, delimits a frame (reference pitfall list, §7).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Literal

from protocols.gb26875.constants import (
    ADDRESS_LEN,
    END,
    HEADER_LEN,
    MAX_SERIAL,
    MIN_FRAME_LEN,
    START,
    STD_MAX_ADU,
    command_name,
)
from protocols.gb26875.errors import DecodeError, EncodeError, ErrorKind
from protocols.gb26875.timelabel import TimeLabel

# start(2) serial(H) version main(B) user(B) time(6s) source(6s) destination(6s) length(H) cmd(B)
HEADER = struct.Struct("<2sHBB6s6s6sHB")
assert HEADER.size == HEADER_LEN

ZERO_ADDRESS = bytes(ADDRESS_LEN)


def checksum(data: bytes | bytearray | memoryview) -> int:
    """校验和: the arithmetic sum of the control unit and ADU bytes, low 8 bits kept (表1)."""
    return sum(data) & 0xFF


def address_from_int(value: int, byte_order: Literal["little", "big"] = "little") -> bytes:
    """Six address bytes from an integer (the standard sends addresses low byte first)."""
    if not 0 <= value < 1 << 48:
        raise EncodeError(f"address {value} does not fit 6 bytes")
    return value.to_bytes(ADDRESS_LEN, byte_order)


def address_to_int(raw: bytes, byte_order: Literal["little", "big"] = "little") -> int:
    """The integer view of a 6-byte address under a byte order."""
    return int.from_bytes(raw, byte_order)


@dataclass(frozen=True, slots=True)
class Frame:
    """One GB/T 26875.3 frame with its ADU still as bytes (see :mod:`.adu` to decode it).

    Addresses are opaque 6-byte IDs: devices disagree on their meaning (uint48 LE, serial-number
    digits big-endian, IPv4 plus port), so they are kept raw and echoed back swapped.
    """

    serial: int
    command: int
    adu: bytes = b""
    source: bytes = ZERO_ADDRESS
    destination: bytes = ZERO_ADDRESS
    time: TimeLabel = field(default_factory=lambda: TimeLabel(0, 0, 0, 1, 1, 0))
    version: tuple[int, int] = (1, 0)

    @property
    def command_name(self) -> str:
        """Readable command name, including reserved and user-defined values."""
        return command_name(self.command)

    @property
    def type_mark(self) -> int | None:
        """The ADU's type mark (类型标志), or None for an empty ADU."""
        return self.adu[0] if self.adu else None

    def encode(self) -> bytes:
        """The frame's bytes; see :func:`encode_frame`."""
        return encode_frame(self)


def encode_frame(frame: Frame, max_adu: int = STD_MAX_ADU) -> bytes:
    """Serialise a frame, computing the length and checksum."""
    if not 0 <= frame.serial <= MAX_SERIAL:
        raise EncodeError(f"serial {frame.serial} is not a uint16")
    if not 0 <= frame.command <= 0xFF:
        raise EncodeError(f"command {frame.command} is not a byte")
    if len(frame.source) != ADDRESS_LEN or len(frame.destination) != ADDRESS_LEN:
        raise EncodeError("addresses are 6 bytes")
    if len(frame.adu) > max_adu:
        raise EncodeError(f"ADU of {len(frame.adu)} bytes exceeds the maximum of {max_adu}")
    main, user = frame.version
    try:
        header = HEADER.pack(START, frame.serial, main, user, frame.time.to_bytes(),
                             frame.source, frame.destination, len(frame.adu), frame.command)
    except (struct.error, ValueError) as exc:
        raise EncodeError(f"header field out of range: {exc}") from None
    body = header[2:] + frame.adu
    return START + body + bytes((checksum(body),)) + END


def decode_frame(data: bytes, max_adu: int = STD_MAX_ADU) -> Frame:
    """Decode exactly one complete frame; raise :class:`DecodeError` on any defect.

    For a byte stream (serial port, TCP) use :class:`~protocols.gb26875.stream.StreamDecoder`,
    which resynchronises after garbage and errors.
    """
    if len(data) < MIN_FRAME_LEN:
        raise DecodeError(ErrorKind.TRUNCATED,
                          f"{len(data)} bytes is shorter than the {MIN_FRAME_LEN}-byte minimum",
                          0, data)
    if data[:2] != START:
        raise DecodeError(ErrorKind.GARBAGE, "no @@ start marker", 0, data)
    length = data[24] | data[25] << 8
    if length > max_adu:
        raise DecodeError(ErrorKind.BAD_LENGTH,
                          f"ADU length {length} exceeds the maximum of {max_adu}", 24, data)
    end = MIN_FRAME_LEN + length
    if len(data) < end:
        raise DecodeError(ErrorKind.TRUNCATED,
                          f"ADU length {length} needs {end} bytes, got {len(data)}", 0, data)
    if data[end - 2:end] != END or len(data) != end:
        raise DecodeError(ErrorKind.BAD_END_MARKER,
                          f"no ## end marker at byte {end - 2} (ADU length {length})",
                          end - 2, data)
    return _build(data, 0, length)


def _build(data: bytes | bytearray, start: int, length: int) -> Frame:
    """Build a frame from a buffer already checked for markers and length; checks the sum."""
    end = start + HEADER_LEN + length
    expected = data[end]
    actual = sum(data[start + 2:end]) & 0xFF
    if actual != expected:
        raise DecodeError(ErrorKind.BAD_CHECKSUM,
                          f"checksum is 0x{expected:02x}, bytes sum to 0x{actual:02x}",
                          end - start, bytes(data[start:end + 3]))
    _, serial, main, user, time, src, dst, _, cmd = HEADER.unpack_from(data, start)
    label = _HEADER_TIMES.get(time)
    if label is None:  # consecutive frames mostly share their time label: reuse the object
        if len(_HEADER_TIMES) >= 1024:
            _HEADER_TIMES.clear()
        label = _HEADER_TIMES[time] = TimeLabel(time[0], time[1], time[2], time[3], time[4],
                                                time[5])
    return Frame(serial, cmd, bytes(data[start + HEADER_LEN:end]), src, dst, label,
                 (main, user))


_HEADER_TIMES: dict[bytes, TimeLabel] = {}


def peek_header(data: bytes) -> tuple[int, bytes, bytes] | None:
    """Serial, source and destination of a damaged frame, to address a deny (§6.5.3).

    Returns None when fewer than the 27 header bytes are there.
    """
    if len(data) < HEADER_LEN or data[:2] != START:
        return None
    _, serial, _, _, _, src, dst, _, _ = HEADER.unpack_from(data, 0)
    return serial, src, dst
