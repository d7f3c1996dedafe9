"""GB/T 26875.3 fire panel driver: the monitoring-centre end of a link to a UITD (asyncio shell).

All protocol rules live in the sans-I/O codec (``protocols.gb26875``: StreamDecoder, Session,
profiles); this file moves bytes, time and records:

* **Confirm only what is durable.** Every valid upload (command 2) is mapped to records
  (:mod:`protocols.panel_records`), handed to ``ctx.emit``, and confirmed (command 3) only after
  emit returned (图3). If emit raises, no confirm goes out: the UITD resends (§6.5.4) and nothing
  is lost; ``emit_failed`` counts it. A frame that fails its check is denied (command 6, §6.5.3).
* **Report once, and every alarm.** A retransmission (our confirm was lost) is
  ``Incoming(duplicate=True)`` from the session, whose memory of what was taken outlives
  reconnects: it is confirmed again and counted, not reported again. State words are diffed per
  source and a repeat is known by its own time label, so a re-sent state adds nothing; but an
  upload that reports an alarm again under a new time label (a backlog sent fire alarms first)
  is a record of its own (:mod:`protocols.panel_records`).
* **Know the state.** At start and after every reconnect the driver reads the system states (61),
  the components configured or last seen in an abnormal state (62) and the UITD state (81); the
  answers (command 5) become events like uploads, but say what holds, not that it happened
  again (``answer=True``). Sources that had conditions raised when the agent last stopped
  (``ctx.previous``) are read too, and their first word is diffed against those conditions:
  what cleared while the agent was down is restored, what still holds is not raised again by
  the read. The UITD clock is set (90) on connect and on a schedule; check-posts (91) are sent
  on command and answered later by a type 24 upload.
* **Watch the line.** No valid frame for ``silence_timeout_s`` (a quiet panel is asked for its
  state after ``probe_after_s``), or a port that errors or vanishes, is one ``link_fault`` event,
  a down link, and reopening with jittered exponential back-off until frames flow again; then
  the fault is cleared (:mod:`.panel_fault`) and the state read again. One raise per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from common.backoff import Backoff
from edge.config.panel import PanelConfig
from edge.drivers.base import CommandHandler, DriverContext, EmitRefused
from edge.drivers.panel_fault import LinkFault
from edge.drivers.panel_link import LinkClosed, PanelLink, make_link
from edge.drivers.panel_requests import PanelRequests, Reply, RequestFailed
from protocols.gb26875 import (
    ApplicationData,
    Command,
    Completed,
    DecodeError,
    DeliveryMemory,
    ErrorKind,
    Failed,
    Frame,
    Incoming,
    Resend,
    Session,
    SessionEvent,
    StreamDecoder,
    TimeLabel,
    address_from_int,
    decode_adu,
    get_profile,
)
from protocols.panel_records import PanelMapper
from protocols.wire import Bus, Event, EventType, Record, Source, WireError
from protocols.wire import CommandName as Cmd

__all__ = ["PanelDriver", "RequestFailed"]

_TICK = 0.2  # s between watchdog/timer checks; resends may be this late, well within §6.5.4
_IDLE_FLUSH = 0.5  # s of line idle before skipped bytes are reported (StreamDecoder.flush)


@dataclass(frozen=True, slots=True)
class _Upload:
    """A command 2 frame, handed to the session only when its turn to be stored comes: then
    ``Incoming.duplicate`` knows every upload stored before it, including an earlier copy of
    itself that was still being stored when this one arrived (both in one read, say)."""

    frame: Frame
    session: Session
    receive_ms: int


@dataclass(frozen=True, slots=True)
class _Answer:
    frame: Frame
    receive_ms: int
    future: asyncio.Future[Reply] | None  # None: nobody waits any more, still recorded


class PanelDriver:
    """One GB/T 26875.3 link (``panel/<name>``), the gateway acting as monitoring centre."""

    def __init__(self, config: PanelConfig, ctx: DriverContext, *,
                 link: PanelLink | None = None) -> None:
        self.config, self.ctx = config, ctx
        self.profile = get_profile(config.profile)
        self.link: PanelLink = link if link is not None else make_link(config)
        self._tz = ZoneInfo(config.timezone) if config.timezone else None
        order = self.profile.address_byte_order
        self._local = address_from_int(config.centre_address, order)
        self._peer = address_from_int(config.uitd_address or 0, order)
        base = f"{config.source_prefix}/{config.name}"
        # Conditions raised before the last stop, per source of this panel (every id of ours
        # starts with the prefix, which is unique per panel): the first word of each source
        # is diffed against them, so what cleared while the agent was down is restored.
        previous: dict[str, set[str]] = {}
        for sid, etype in ctx.previous:
            if sid.startswith(config.source_prefix + "/"):
                previous.setdefault(sid, set()).add(etype)
        self.mapper = PanelMapper(config.source_prefix, f"{base}/uitd", tz=self._tz,
                                  report_test_mode=config.report_test_mode,
                                  uitd_description=f"用户信息传输装置 {config.name}",
                                  previous=previous)
        self.link_source = Source(f"{base}/link", Bus.GB26875,
                                  description=f"监测连接线路 {self.link.description}"[:64])
        self._session: Session | None = None
        self._queue: asyncio.Queue[_Upload | _Answer] = asyncio.Queue(maxsize=256)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._write_lock = asyncio.Lock()
        # What the UITD delivered and we took, kept across reconnects: after one the UITD
        # resends, possibly numbered anew (表1), what it saw no confirm for.
        self._taken = DeliveryMemory()
        self._tasks: set[asyncio.Task[None]] = set()
        self._broken = asyncio.Event()
        self._broken_by = LinkClosed("write failed")
        self._up = False
        self._down_detail = "not connected yet"
        self._last_frame = self._last_bytes = self._last_probe = 0.0
        self._flushed = True
        self._state_ok = False
        self._state_task: asyncio.Task[None] | None = None
        self._next_state_read = math.inf
        self._sync_task: asyncio.Task[None] | None = None
        self._next_sync = math.inf
        # A link fault still raised at the last stop is down until frames flow: the first
        # valid frame restores it, a failed first open raises nothing new.
        self._fault = LinkFault(self.link_source, ctx, raised=EventType.LINK_FAULT.value in
                                previous.get(self.link_source.id, ()))
        self._backoff = Backoff(config.reopen_min_s, config.reopen_max_s, jitter=0.25)
        self.requests = PanelRequests(self.name, config, self.profile, self.mapper, ctx.counters,
                                      self._request, self._link_down, tz=self._tz)

    @property
    def name(self) -> str:
        return self.config.link_name

    @property
    def up(self) -> bool:
        """True while valid frames arrive from the UITD."""
        return self._up

    def commands(self) -> Mapping[Cmd, CommandHandler]:
        return self.requests.commands()

    def matches(self, prefix: str) -> bool:
        """Whether a ``read_panel_state`` ``panel`` argument names anything of this panel."""
        return self.requests.matches(prefix)

    # -- lifetime ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the link until cancelled; field trouble is counted, reported and retried."""
        self.ctx.links.set(self.name, False, self._down_detail)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._process(), name=f"{self.name}/process")
                tg.create_task(self._fault.run(), name=f"{self.name}/link-fault")
                await self._connect_loop()
        finally:
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(OSError):
                await self.link.shutdown()
            self._fail_pending("driver stopped")

    async def _connect_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.config.silence_timeout_s):
                    await self.link.open()
            except (OSError, TimeoutError, ValueError) as exc:  # ValueError: pyserial settings
                self.ctx.counters.inc("open_failed")
                self._lost(f"cannot open {self.link.description}: {exc or 'timed out'}")
                await self._pause()
                continue
            ended = await self._serve()
            with contextlib.suppress(OSError):
                await self.link.close()
            if ended.fault:
                self.ctx.counters.inc("link_lost")
                self._lost(str(ended))
                await self._pause()
            else:  # the UITD reconnected: take the new connection at once
                self._up = False

    async def _pause(self) -> None:
        """Jittered exponential back-off before the next reopen."""
        await asyncio.sleep(self._backoff.next())
        self.ctx.counters.inc("reopen")

    def _lost(self, detail: str) -> None:
        self._up = False
        self._down_detail = detail
        self.ctx.links.set(self.name, False, detail)
        self._fault.lost(detail)

    def _traffic(self, now: float) -> None:
        """A valid frame arrived: the line works."""
        self._last_frame = now
        if self._up:
            return
        self._up = True
        self._backoff.reset()
        self.ctx.links.set(self.name, True)
        self._fault.restored()
        if self.config.clock_sync_interval_s > 0:
            self._next_sync = now
        self._next_state_read = min(self._next_state_read, now)  # if not read yet: now

    # -- one connection --------------------------------------------------------------------------

    async def _serve(self) -> LinkClosed:
        c = self.config
        session = Session(self._local, self._peer, self.profile, c.request_timeout_s, c.retries,
                          clock=self._label, memory=self._taken)
        decoder = StreamDecoder(self.profile)
        self._session, self._broken = session, asyncio.Event()
        now = time.monotonic()
        self._last_frame = self._last_bytes = self._last_probe = now
        self._state_ok = False
        self._next_state_read = now  # the first tick reads (the answers show the line works)
        if not c.read_state_on_connect and c.probe_after_s > 0:
            self._spawn(self.requests.probe(), "probe")
        reader = asyncio.create_task(self._read_loop(session, decoder))
        ticker = asyncio.create_task(self._tick(session, decoder))
        broken = asyncio.create_task(self._broken.wait())
        try:
            await asyncio.wait((reader, ticker, broken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, ticker, broken):
                task.cancel()
            await asyncio.gather(reader, ticker, broken, return_exceptions=True)
            self._session = None
            for task in list(self._tasks):  # reads, probes, syncs of this connection
                task.cancel()
            for ev in session.reset():  # what was open fails (表1: numbering restarts)
                if isinstance(ev, Failed):
                    self._fail(ev.serial, f"link lost ({ev.reason})", "link_reset")
        if ticker.done() and not ticker.cancelled() and ticker.exception() is None:
            return LinkClosed(ticker.result())
        if reader.done() and not reader.cancelled() and isinstance(reader.exception(),
                                                                    LinkClosed):
            exc = reader.exception()
            assert isinstance(exc, LinkClosed)
            return exc
        return self._broken_by

    async def _read_loop(self, session: Session, decoder: StreamDecoder) -> None:
        while True:
            data = await self.link.read()
            now, receive_ms = time.monotonic(), self.ctx.now_ms()
            self._last_bytes, self._flushed = now, False
            for item in decoder.feed(data):
                await self._item(item, session, now, receive_ms)

    async def _tick(self, session: Session, decoder: StreamDecoder) -> str:
        """Timers of one connection; returns when the line has been silent too long."""
        c = self.config
        while True:
            now = time.monotonic()
            await self._session_events(session.poll(now), session)
            if not self._flushed and now - self._last_bytes >= _IDLE_FLUSH:
                self._flushed = True
                for item in decoder.flush():
                    await self._item(item, session, now, self.ctx.now_ms())
            quiet = now - self._last_frame
            if quiet >= c.silence_timeout_s:
                return f"no valid frame from the UITD for {c.silence_timeout_s:g} s"
            if (c.probe_after_s > 0 and quiet >= c.probe_after_s and not self._pending
                    and now - self._last_probe >= c.probe_after_s):
                self._last_probe = now
                self._spawn(self.requests.probe(), "probe")
            if (c.read_state_on_connect and not self._state_ok and now >= self._next_state_read
                    and (self._state_task is None or self._state_task.done())):
                # At open, and again while frames flow but a read went unanswered.
                self._next_state_read = now + max(c.probe_after_s, 10.0)
                self._state_task = self._spawn(self._initial_read(), "read-state")
            if self._up and now >= self._next_sync and (
                    self._sync_task is None or self._sync_task.done()):
                self._next_sync = now + c.clock_sync_interval_s
                self._sync_task = self._spawn(self.requests.scheduled_sync(), "clock-sync")
            await asyncio.sleep(_TICK)

    async def _item(self, item: Frame | DecodeError, session: Session, now: float,
                    receive_ms: int) -> None:
        if isinstance(item, DecodeError):
            self.ctx.counters.inc(item.kind.value)
            if item.kind not in (ErrorKind.GARBAGE, ErrorKind.TRUNCATED):
                deny = session.deny_damaged(item)  # §6.5.3: a check error is denied
                if deny is not None:
                    self.ctx.counters.inc("deny_sent")
                    await self._write(deny)
            return
        self._traffic(now)
        if self.config.uitd_address is None and item.source != self._peer:
            self._peer = session.peer = item.source  # learn the UITD's address
        if item.command == Command.SEND_DATA:  # to the session in turn (see _Upload)
            await self._queue.put(_Upload(item, session, receive_ms))
            return
        await self._session_events(session.receive(item, now), session, receive_ms)

    async def _session_events(self, events: list[SessionEvent], session: Session,
                              receive_ms: int = 0) -> None:
        for ev in events:
            if isinstance(ev, Incoming):  # not an upload (command 2): see _item
                answer = session.acknowledge(ev.frame)  # a dialect's keep-alive
                if answer is None:  # §6.5.3: unrecognised command (or a centre's command)
                    self.ctx.counters.inc("unknown_command")
                    answer = session.deny(ev.frame)
                else:
                    self.ctx.counters.inc("keepalive")
                await self._write(answer)
            elif isinstance(ev, Completed):
                future = self._pending.pop(ev.serial, None)
                if future is not None and future.done():
                    future = None  # the requester gave up; the answer is still recorded
                if ev.reply.command == Command.RESPONSE:
                    await self._queue.put(_Answer(ev.reply, receive_ms, future))
                elif future is not None:
                    future.set_result(Reply(ev.reply, 0, 0))
            elif isinstance(ev, Resend):
                self.ctx.counters.inc("resend")
                await self._write(ev.data)
            elif isinstance(ev, Failed):
                self._fail(ev.serial, ev.reason,
                           "denied" if ev.reason.startswith("denied") else "timeout")
            else:
                self.ctx.counters.inc("unmatched")

    def _fail(self, serial: int, reason: str, counter: str) -> None:
        self.ctx.counters.inc(counter)
        future = self._pending.pop(serial, None)
        if future is not None and not future.done():
            future.set_exception(RequestFailed(reason))

    def _fail_pending(self, reason: str) -> None:
        for serial in list(self._pending):
            self._fail(serial, reason, "link_reset")

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            try:
                await self.link.write(data)
            except LinkClosed as exc:
                self._broken_by = exc
                self._broken.set()
                raise

    # -- uploads and answers: records first, then the confirm --------------------------------------

    async def _process(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, _Answer):
                    await self._answer(item)
                else:
                    await self._upload(item)
            except LinkClosed:
                self.ctx.counters.inc("confirm_lost")  # the UITD resends; dedupe covers it

    async def _upload(self, item: _Upload) -> None:
        frame, session, c = item.frame, item.session, self.ctx.counters
        (incoming,) = session.receive(frame, time.monotonic())
        assert isinstance(incoming, Incoming)
        try:
            adu = decode_adu(frame.adu, self.profile)
        except DecodeError as exc:  # intact frame, unreadable data: refuse it (图3), say so once
            c.inc(exc.kind.value)
            if not incoming.duplicate and not await self._store([Event(
                    source=self.mapper.uitd_source(), type=EventType.DEVICE_ERROR,
                    receive_ms=item.receive_ms,
                    detail=f"undecodable upload, type {frame.adu[:1].hex()}: {exc.detail}"
                           [:256])]):
                session.release(frame)  # not reported: the resend is reported
            c.inc("deny_sent")
            await self._write(session.deny(frame))
            return
        if incoming.duplicate:
            c.inc("duplicate")  # a retransmission: confirm again, report once
        else:
            try:
                mapped = self.mapper.map(adu, item.receive_ms, frame.time)
            except WireError:  # a value no record can carry: refuse it, count it, go on
                session.release(frame)  # a resend is refused (and counted) again
                c.inc("unmappable")
                c.inc("deny_sent")
                await self._write(session.deny(frame))
                return
            if mapped.records and not await self._store(mapped.records):
                session.release(frame)  # no confirm: the UITD resends it, to be stored then
                return
            self.mapper.commit(mapped)
            c.inc("uploads")
            if any(_is_reset(r) for r in mapped.records):
                # A reset (复位, 图9 bit 0) clears latched alarms on the panel, but many panels
                # send no new state for each component: read back those we hold in alarm.
                self._spawn(self.requests.read_after_reset(), "reset-read")
        answer = session.acknowledge(frame)  # 3 (or the dialect's handshake reply)
        assert answer is not None
        c.inc("confirm_sent")
        await self._write(answer)

    async def _answer(self, item: _Answer) -> None:
        try:
            adu = decode_adu(item.frame.adu, self.profile)
        except DecodeError as exc:
            self.ctx.counters.inc(exc.kind.value)
            self._settle(item.future, RequestFailed(f"unreadable answer: {exc.detail}"))
            return
        try:
            mapped = self.mapper.map(adu, item.receive_ms, item.frame.time, answer=True)
        except WireError as exc:
            self.ctx.counters.inc("unmappable")
            self._settle(item.future, RequestFailed(f"answer not recordable: {exc}"))
            return
        if mapped.records and not await self._store(mapped.records):
            self._settle(item.future, RequestFailed("records could not be stored"))
            return
        self.mapper.commit(mapped)
        count = len(adu.objects) if isinstance(adu, ApplicationData) else 0
        self._settle(item.future, Reply(item.frame, count, len(mapped.records)))

    @staticmethod
    def _settle(future: asyncio.Future[Reply] | None, outcome: Reply | Exception) -> None:
        if future is None or future.done():
            return
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    async def _store(self, records: Sequence[Record]) -> bool:
        try:
            await self.ctx.emit(records)
        except EmitRefused:  # counted; the caller withholds the confirm
            self.ctx.counters.inc("emit_failed")
            return False
        self.ctx.counters.inc("records", len(records))
        return True

    # -- requests and controls ---------------------------------------------------------------------

    def _label(self) -> TimeLabel:
        return TimeLabel.from_datetime(datetime.now(self._tz))

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"{self.name}/{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _link_down(self) -> str | None:
        return None if self._session is not None else self._down_detail

    async def _initial_read(self) -> None:
        self._state_ok = await self.requests.initial_read()

    async def _request(self, command: int, adu: ApplicationData) -> Reply:
        """Send a control or request and wait for its confirm or answer (see _session_events)."""
        session = self._session
        if session is None:
            raise RequestFailed(f"link down: {self._down_detail}")
        raw = session.send(command, adu, time.monotonic())
        serial = raw[2] | raw[3] << 8
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[serial] = future
        try:
            await self._write(raw)
        except LinkClosed as exc:
            self._pending.pop(serial, None)
            raise RequestFailed(f"link lost: {exc}") from None
        return await future


def _is_reset(record: Record) -> bool:
    return isinstance(record, Event) and (
        record.type is EventType.RESET
        or (record.type is EventType.OPERATION and "reset" in record.operations))
