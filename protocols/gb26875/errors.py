"""Typed decode and encode errors.

Every way a frame or an application data unit can be wrong is a distinct :class:`ErrorKind`, so a
driver can count them per reason and report them in its health data. A :class:`DecodeError`
carries the offending bytes and where they were. "Need more bytes" is never an error: the stream
decoder simply returns nothing until a frame is complete.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """Why bytes were rejected. Frame-level kinds first, then application-data kinds."""

    # Frame level (GB/T 26875.3 §6.5.3 lists these as check errors that warrant a deny).
    GARBAGE = "garbage"  # bytes that are not part of any frame (before a start marker)
    BAD_LENGTH = "bad_length"  # ADU length over the maximum, or running past the next frame
    BAD_END_MARKER = "bad_end_marker"  # no "##" where the length field says the frame ends
    BAD_CHECKSUM = "bad_checksum"  # 校验和 mismatch over bytes 3..27+L
    TRUNCATED = "truncated"  # the input ended inside a frame
    # Application data level (§7, §8): the frame was intact but its ADU does not parse.
    ADU_TOO_SHORT = "adu_too_short"  # fewer than the 2 bytes of type mark and object count
    OBJECT_SIZE = "object_size_mismatch"  # objects do not fill the ADU exactly
    BAD_FIELD = "bad_field"  # a length byte or value that cannot be right


class DecodeError(ValueError):
    """A typed decoding failure.

    ``offset`` is the position of ``data`` in the input: the stream offset for a
    :class:`~protocols.gb26875.stream.StreamDecoder`, the offset within the frame or ADU otherwise.
    """

    def __init__(self, kind: ErrorKind, detail: str, offset: int = 0, data: bytes = b"") -> None:
        super().__init__(f"{kind.value} at byte {offset}: {detail}")
        self.kind = kind
        self.detail = detail
        self.offset = offset
        self.data = bytes(data)

    def __repr__(self) -> str:
        return (f"DecodeError(kind={self.kind.value!r}, offset={self.offset}, "
                f"len={len(self.data)}, detail={self.detail!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DecodeError):
            return NotImplemented
        return (self.kind, self.offset, self.data, self.detail) == (
            other.kind, other.offset, other.data, other.detail)

    def __hash__(self) -> int:
        return hash((self.kind, self.offset, self.data))


class EncodeError(ValueError):
    """An object that cannot be put on the wire (a field out of range, a text too long...)."""
