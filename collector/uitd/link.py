"""One UITD's TCP connection: an ``asyncio.Protocol`` (no task, no StreamReader per link).

A link is cheap on purpose (10,000 at once, docs/gb26875-centre.md "Memory"): a few slots, a
stream decoder whose buffer holds at most one maximal frame (protocols/gb26875/stream.py), and
a :class:`~protocols.gb26875.Session` once the UITD has named itself. Everything the UITD may
do wrong costs this link only, and is counted (``closed`` reasons in the centre's counters):

* bytes that never make a valid frame (``garbage``): :data:`MAX_JUNK` bytes without a valid
  frame, or :data:`MAX_BAD` decode errors more than the frames it sent, close the link;
* a first frame from an address that is not configured (``unknown_uitd``, unless
  ``accept_unknown``), or a later frame from another address (``address_changed``);
* more frames than ``max_frames_per_s`` allows over a burst (``flood``);
* not reading what we write (``not_reading``: our write buffer past :data:`WRITE_LIMIT`);
* silence (``silence``): no valid frame for ``silence_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from protocols.gb26875 import (
    Command,
    Completed,
    DecodeError,
    ErrorKind,
    Failed,
    Frame,
    Incoming,
    Resend,
    Session,
    SessionEvent,
    StreamDecoder,
)

if TYPE_CHECKING:
    from collector.uitd.centre import Centre
    from collector.uitd.device import Device

__all__ = ["MAX_BAD", "MAX_JUNK", "WRITE_LIMIT", "UitdLink"]

log = logging.getLogger("firegate.collector.uitd")
MAX_BAD = 16
MAX_JUNK = 8 * 1024
"""Bytes a link may send without completing a valid frame (the largest is 1,054 bytes)."""
"""Decode errors a link may have beyond its good frames before it is closed."""
WRITE_LIMIT = 64 * 1024
"""Bytes we may have queued unsent to one UITD (confirms are 30 bytes): past it the UITD is
not reading, and the link is closed rather than buffering without bound."""
DENIED_KINDS = frozenset({ErrorKind.BAD_CHECKSUM, ErrorKind.BAD_END_MARKER, ErrorKind.BAD_LENGTH})
"""Check errors of a frame whose header is readable: denied (§6.5.3)."""


class UitdLink(asyncio.Protocol):
    """The protocol object of one accepted connection."""

    __slots__ = ("_centre", "_decoder", "_token_time", "_tokens", "answers", "bad", "closed",
                 "device", "frames", "host", "junk", "last_valid", "opened", "paused", "peer",
                 "session", "timer", "transport")

    def __init__(self, centre: Centre) -> None:
        self._centre = centre
        self.transport: asyncio.Transport | None = None
        self._decoder: StreamDecoder | None = None
        self.session: Session | None = None
        self.device: Device | None = None
        self.peer = self.host = ""
        self.opened = self.last_valid = self._token_time = time.monotonic()
        self._tokens = float(centre.config.flood_burst)
        self.frames = self.bad = self.junk = 0
        self.closed = self.paused = False
        self.answers: dict[int, Callable[[SessionEvent], None]] = {}
        """Open downstream commands by serial: who wants the answer."""
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        name = transport.get_extra_info("peername")
        self.peer = f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)
        self.host = str(name[0]) if isinstance(name, tuple) else self.peer
        if not self._centre.opened(self):
            return
        transport.set_write_buffer_limits(high=WRITE_LIMIT)
        self._decoder = StreamDecoder()

    def data_received(self, data: bytes) -> None:
        if self.closed or self._decoder is None:
            return
        frames = self.frames
        for item in self._decoder.feed(data):
            if self.closed:
                return
            if isinstance(item, DecodeError):
                self._damaged(item)
            else:
                self._frame(item)
        if self.frames != frames:
            self.junk = 0
        else:
            self.junk += len(data)
            if self.junk > MAX_JUNK:  # no frame can be this long (表1: 30 + 1024 bytes)
                self._centre.counters["decode_garbage"] += 1
                self.close("garbage")

    def eof_received(self) -> bool:
        return False  # half-closed by the UITD: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_answers("link lost")
        if self.timer is not None:
            self.timer.cancel()
        self._centre.lost(self)

    def pause_writing(self) -> None:
        self.close("not_reading")

    # -- frames ---------------------------------------------------------------------------------

    def _damaged(self, error: DecodeError) -> None:
        c = self._centre
        c.counters[f"decode_{error.kind.value}"] += 1
        self.bad += 1
        if error.kind in DENIED_KINDS and self.session is not None:
            deny = self.session.deny_damaged(error)  # §6.5.3: a check error is denied
            if deny is not None:
                c.counters["denied"] += 1
                self.write(deny)
        if self.bad > MAX_BAD + self.frames:
            self.close("garbage")

    def _frame(self, frame: Frame) -> None:
        now = time.monotonic()
        rate = self._centre.config.max_frames_per_s
        self._tokens = min(float(self._centre.config.flood_burst),
                           self._tokens + (now - self._token_time) * rate)
        self._token_time = now
        if self._tokens < 1.0:
            self.close("flood")
            return
        self._tokens -= 1.0
        device = self.device
        if device is None:
            device = self._centre.identify(self, frame)
            if device is None:
                return  # refused and closed
        elif frame.source != device.entry.raw_address:
            self.close("address_changed")
            return
        self.frames += 1
        self.last_valid = now
        self._centre.valid_frame(device, now)
        session = self.session
        assert session is not None
        if frame.command == Command.SEND_DATA:
            self._centre.counters["uploads"] += 1
            self._centre.enqueue(device, self, frame)
            return
        for event in session.receive(frame, now):
            self._session_event(event)

    def _session_event(self, event: SessionEvent) -> None:
        c = self._centre
        session = self.session
        assert session is not None
        if isinstance(event, Incoming):  # a keep-alive, or a command the centre does not take
            answer = session.acknowledge(event.frame)
            if answer is None:  # §6.5.3: control or request from a UITD to its centre
                c.counters["unexpected_command"] += 1
                answer = session.deny(event.frame)
            else:
                c.counters["keepalives"] += 1
            self.write(answer)
        elif isinstance(event, Resend):
            c.counters["command_resent"] += 1
            self.write(event.data)
        elif isinstance(event, Completed | Failed):
            want = self.answers.pop(event.serial, None)
            if want is not None:
                want(event)
        else:
            c.counters["unmatched"] += 1
        self._arm()

    # -- downstream commands ------------------------------------------------------------------

    def send(self, command: int, adu: object, want: Callable[[SessionEvent], None]) -> None:
        """Start a control or request (clock sync, check-post, read); ``want`` gets its
        :class:`Completed` or :class:`Failed`."""
        session = self.session
        assert session is not None and not self.closed
        raw = session.send(command, adu, time.monotonic())  # type: ignore[arg-type]
        self.answers[raw[2] | raw[3] << 8] = want
        self.write(raw)
        self._arm()

    def _arm(self) -> None:
        """A timer for the session's next deadline, only while a command is open."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        session = self.session
        deadline = None if session is None or self.closed else session.next_deadline()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self.timer = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()),
                                  self._poll)

    def _poll(self) -> None:
        self.timer = None
        if self.session is None or self.closed:
            return
        for event in self.session.poll(time.monotonic()):
            self._session_event(event)
        self._arm()

    def _fail_answers(self, reason: str) -> None:
        answers, self.answers = self.answers, {}
        if self.session is None:
            return
        for event in self.session.reset():
            if isinstance(event, Failed):
                want = answers.pop(event.serial, None)
                if want is not None:
                    want(Failed(event.serial, event.request, reason))

    # -- writing and closing ------------------------------------------------------------------

    def write(self, data: bytes | None) -> None:
        if data is None or self.closed or self.transport is None:
            return
        self.transport.write(data)

    def pause(self) -> None:
        if not self.paused and not self.closed and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and not self.closed and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def close(self, reason: str) -> None:
        """Close this link for ``reason`` (counted once as ``closed_<reason>``)."""
        if self.closed:
            return
        self.closed = True
        self._centre.counters[f"closed_{reason}"] += 1
        if reason not in ("replaced", "stopping"):
            log.info("uitd link %s (%s) closed: %s", self.peer,
                     self.device.gateway if self.device else "unidentified", reason)
        self._fail_answers(f"link closed: {reason}")
        if self.transport is not None:
            self.transport.abort()
