"""Streaming frame decoder: bytes in any chunking in, frames or typed errors out (sans-I/O).

Feed it whatever the serial port or socket delivered; it returns the complete frames and the
errors found so far, in stream order. Rules (reference checklist §8, item 1):

* Resynchronise on the next ``@@``. Read L from bytes 25-26, require L <= the profile's maximum,
  then check the ``##`` end marker and the checksum. Never search for ``##`` in the body.
* A candidate that fails is given up one byte at a time, so a real ``@@`` inside a damaged frame,
  or right after garbage ending in ``@``, is still found. The bytes skipped until the next good
  frame join the *same* error: one corruption gives exactly one counted error.
* A complete frame whose end marker is right but whose checksum is wrong is reported at once and
  skipped whole (its length field is evidently intact): the driver can deny it straight away with
  the serial from :func:`~protocols.gb26875.frame.peek_header` (§6.5.3). Unless a good frame lies
  inside that span: then the "frame" was a truncated one whose length reached the good frame's
  end marker, and decoding resynchronises on the good frame.
* A candidate whose declared length runs past a complete, valid frame further on is abandoned as
  soon as that frame is in the buffer, so a corrupted length never holds back an alarm behind it.
* The buffer is bounded: at most one maximal frame plus the last chunk fed. Skipped bytes are
  reported in errors of at most ``max_error_bytes`` each.

"Need more bytes" is not an error: :meth:`StreamDecoder.feed` just returns fewer items. Call
:meth:`StreamDecoder.flush` when the line has been idle (to report pending garbage promptly) and
:meth:`StreamDecoder.close` at end of stream.
"""

from __future__ import annotations

from collections import Counter

from protocols.gb26875.constants import HEADER_LEN, MIN_FRAME_LEN, START
from protocols.gb26875.errors import DecodeError, ErrorKind
from protocols.gb26875.frame import Frame, _build
from protocols.gb26875.profile import STANDARD, Profile

_AT = 0x40
_HASH = 0x23

Event = Frame | DecodeError


class _Pending:
    """A run of skipped bytes that will be reported as one error."""

    __slots__ = ("candidate_at", "candidates", "data", "detail", "kind", "offset")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.kind = ErrorKind.GARBAGE
        self.detail = "bytes outside any frame"
        self.data = bytearray()
        self.candidates = 0  # failed "@@" candidates in this run
        self.candidate_at = -1  # stream offset of the first one


class StreamDecoder:
    """Incremental GB/T 26875.3 frame decoder with resynchronisation and per-reason counters."""

    def __init__(self, profile: Profile = STANDARD, max_error_bytes: int = 2048) -> None:
        if max_error_bytes < 1:
            raise ValueError("max_error_bytes must be positive")
        self.profile = profile
        self.max_error_bytes = max_error_bytes
        self.frames = 0
        self.bytes_in = 0
        self.errors: Counter[ErrorKind] = Counter()
        self._max_adu = profile.max_adu
        self._buf = bytearray()
        self._base = 0  # stream offset of self._buf[0]
        self._pending: _Pending | None = None

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Add bytes; return the frames and errors they complete, in stream order."""
        self.bytes_in += len(data)
        self._buf += data
        out: list[Event] = []
        self._scan(out)
        return out

    def flush(self) -> list[Event]:
        """Report skipped bytes now (call on an idle line); a partial frame stays buffered."""
        out: list[Event] = []
        self._emit_pending(out)
        return out

    def close(self) -> list[Event]:
        """End of stream: report skipped bytes and any incomplete frame as ``truncated``."""
        out = self.flush()
        if self._buf:
            rest = bytes(self._buf)
            self._fail(ErrorKind.TRUNCATED,
                       f"stream ended {len(rest)} bytes into a frame", self._base, out)
            self._skip(rest, out)
            self._emit_pending(out)
            self._base += len(rest)
            self._buf.clear()
        return out

    # -- internals -------------------------------------------------------------------------

    def _scan(self, out: list[Event]) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0
        max_adu = self._max_adu
        while True:
            i = buf.find(START, pos)
            if i < 0:
                # Keep a trailing "@": it may be the first half of the next start marker.
                keep = n - 1 if n > pos and buf[n - 1] == _AT else n
                if keep > pos:
                    self._skip_range(pos, keep, out)
                pos = keep
                break
            if i > pos:
                self._skip_range(pos, i, out)
                pos = i
            if n - i < HEADER_LEN:
                break
            length = buf[i + 24] | buf[i + 25] << 8
            if length > max_adu:
                self._fail(ErrorKind.BAD_LENGTH,
                           f"ADU length {length} exceeds the maximum of {max_adu}",
                           self._base + i, out)
                self._skip_range(i, i + 1, out)
                pos = i + 1
                continue
            end = i + MIN_FRAME_LEN + length
            if end > n:
                later = self._next_complete(i + 1, n)
                if later is None:
                    break  # need more bytes
                self._fail(ErrorKind.BAD_LENGTH,
                           f"ADU length {length} runs past the next valid frame",
                           self._base + i, out)
                self._skip_range(i, later, out)
                pos = later
                continue
            if buf[end - 2] != _HASH or buf[end - 1] != _HASH:
                self._fail(ErrorKind.BAD_END_MARKER,
                           f"no ## end marker where ADU length {length} puts it",
                           self._base + i, out)
                self._skip_range(i, i + 1, out)
                pos = i + 1
                continue
            try:
                frame = _build(buf, i, length)
            except DecodeError as exc:  # bad checksum
                inner = self._next_complete(i + 1, end)
                if inner is not None:
                    # A truncated frame whose length happens to reach the "##" of a good frame
                    # behind it: resynchronise on the good frame instead of skipping it.
                    self._fail(exc.kind, exc.detail, self._base + i, out)
                    self._skip_range(i, inner, out)
                    pos = inner
                    continue
                # Report at once and skip the whole frame, so the driver can deny it now.
                self._emit_pending(out)
                exc.offset = self._base + i
                self.errors[exc.kind] += 1
                out.append(exc)
                pos = end
                continue
            self._emit_pending(out, self._base + i)
            self.frames += 1
            out.append(frame)
            pos = end
        if pos:
            del buf[:pos]
            self._base += pos

    def _next_complete(self, start: int, n: int) -> int | None:
        """Offset of the first complete, valid frame at or after ``start``, if any."""
        buf = self._buf
        j = buf.find(START, start)
        while 0 <= j <= n - MIN_FRAME_LEN:
            length = buf[j + 24] | buf[j + 25] << 8
            end = j + MIN_FRAME_LEN + length
            if (length <= self._max_adu and end <= n and buf[end - 2] == _HASH
                    and buf[end - 1] == _HASH
                    and sum(buf[j + 2:end - 3]) & 0xFF == buf[end - 3]):
                return j
            j = buf.find(START, j + 1)
        return None

    def _fail(self, kind: ErrorKind, detail: str, offset: int, out: list[Event]) -> None:
        """Record a failed candidate in the open error run (opening one if needed).

        The run is reported with the first failure's kind: garbage followed by a broken frame
        is best explained by the broken frame.
        """
        p = self._pending
        if p is None:
            p = self._pending = _Pending(offset)
        p.candidates += 1
        if p.candidates == 1:
            p.kind, p.detail, p.candidate_at = kind, detail, offset

    def _skip_range(self, start: int, stop: int, out: list[Event]) -> None:
        self._skip(self._buf[start:stop], out, self._base + start)

    def _skip(self, data: bytes | bytearray, out: list[Event], offset: int | None = None) -> None:
        """Add skipped bytes to the open error run, cutting it at ``max_error_bytes``."""
        cap = self.max_error_bytes
        at = 0
        while at < len(data):
            p = self._pending
            if p is None:
                start = self._base if offset is None else offset
                p = self._pending = _Pending(start + at)
            take = min(cap - len(p.data), len(data) - at)
            p.data += data[at:at + take]
            at += take
            if len(p.data) >= cap:
                self._emit_pending(out)

    def _emit_pending(self, out: list[Event], frame_at: int = -1) -> None:
        """Report the open error run; ``frame_at`` is the offset of the frame that ends it."""
        p = self._pending
        if p is None:
            return
        self._pending = None
        if not p.data:  # pragma: no cover - a run always skips at least one byte
            return
        if p.candidates == 1 and frame_at == p.candidate_at + 1:
            # "x@" + "@@...": the only failed candidate was a stray "@" glued to a real start.
            p.kind, p.detail = ErrorKind.GARBAGE, "bytes outside any frame"
        self.errors[p.kind] += 1
        out.append(DecodeError(p.kind, f"{p.detail} ({len(p.data)} bytes skipped)", p.offset,
                               bytes(p.data)))
