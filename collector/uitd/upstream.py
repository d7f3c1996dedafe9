"""Forwarding upward (上联): the collector reports to higher monitoring centres as a UITD.

For each ``[[gb26875.upstream]]`` one thread keeps a TCP link to the centre and sends the
uploads queued for it (:mod:`collector.uitd.upstream_queue`) under GB/T 26875.3:

* each upload its own serial (表1), numbered by the codec's
  :class:`~protocols.gb26875.Session`, which also holds the confirm / deny / resend rules: no
  confirm within ``timeout_s`` (§6.5.4: at most 10 s) or a deny, the same bytes again, up to
  ``retries`` times (§6.5.5: 3). Then the link is taken as broken: it is closed and opened
  again, and the upload stays queued and is sent again with a new serial (a UITD keeps its
  records until confirmed, GB 26875.1 4.1.1.4);
* a row leaves the queue only when the centre confirmed it (command 3, 图3);
* up to :data:`WINDOW` uploads in flight, at most one per target (the centre diffs words, so a
  component's words go in order); fire alarms first (GB 26875.1 4.1.2.3);
* link supervision: the standard defines no heartbeat (notes §5), so after ``keepalive_s``
  without traffic the link is patrolled with a UITD running-state upload (type 21, 图13),
  or the profile's keep-alive command or handshake where the dialect has one; a patrol not
  confirmed after its resends breaks the link like any upload;
* reconnects with jittered exponential back-off (common/backoff.py), ``reconnect_min_s`` to
  ``reconnect_max_s``;
* the centre's own packets are answered: uploads and keep-alives confirmed, clock sync (90)
  and initialise (89) confirmed (the collector keeps its own clock: counted, not acted on), a
  read of the UITD state (81) answered with type 21, anything else denied;
* a check-post (查岗, 91) is confirmed and opens an alarm in the alarm book for the people on
  duty (:class:`CheckPosts`); when one of them acknowledges it, the answer (查岗应答, type 24
  with bit 5 and their operator number) is queued like any upload, and the alarm cleared.

:class:`Forwarding` is what the rest of the collector sees: :meth:`Forwarding.offer` on the
writer thread (collector/effects.py, before the acknowledgement), :meth:`Forwarding.status` for
the snapshot and ``collector status``.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from collector.alarms.book import CLEAR, RAISE, AlarmBook, Signal
from collector.alarms.model import ACKNOWLEDGED, Alarm, AlarmChange, Change
from collector.metrics import Metrics
from collector.uitd.config import UpstreamConfig
from collector.uitd.upstream_queue import FILE_NAME, Offer, Row, UpstreamQueue
from common.backoff import Backoff
from protocols.gb26875 import (
    ApplicationData,
    CheckPost,
    Command,
    Completed,
    DecodeError,
    DeliveryMemory,
    Failed,
    Frame,
    Incoming,
    RawApplicationData,
    Resend,
    Session,
    SessionEvent,
    StreamDecoder,
    TimeLabel,
    UitdOperation,
    UitdOperationRecord,
    UitdState,
    UitdStatus,
    address_from_int,
    decode_adu,
    encode_adu,
)
from protocols.wire import EventType, Priority

__all__ = ["CHECK_POST", "WINDOW", "CheckPosts", "Forwarder", "Forwarding", "LinkDown"]

log = logging.getLogger("firegate.collector.upstream")

WINDOW = 8
"""Uploads in flight at once on one link (each to a different target)."""
CONNECT_TIMEOUT_S = 10.0
IDLE_POLL_S = 1.0
"""Longest sleep of a link waiting for nothing (the queue wakes it at once otherwise)."""
EXPIRE_EVERY_S = 60.0
READ_SIZE = 65_536
MAX_JUNK = 8 * 1024
"""Bytes the centre may send without completing a valid frame (the largest is 1,054 bytes,
表1): past it the link is taken as broken (``garbage``) and opened again after the back-off."""


CHECK_POST = EventType.CHECK_POST.value
"""The type of a check-post alarm (the wire's ``check_post``)."""


class LinkDown(Exception):
    """The link to the centre is broken (closed, refused, silent, uploads unconfirmed)."""


def _label() -> TimeLabel:
    return TimeLabel.from_datetime(datetime.now())


@dataclass(slots=True)
class _Flight:
    row: Row | None  # None: a patrol
    sent_at: float


class Forwarder:
    """One upstream: its thread, its link, its counters."""

    def __init__(self, config: UpstreamConfig, queue: UpstreamQueue,
                 metrics: Metrics | None = None, *, window: int = WINDOW) -> None:
        self.config = config
        self.queue = queue
        self.metrics = metrics
        self.window = window
        self.name = config.name
        order = config.profile.address_byte_order
        self.local = address_from_int(config.uitd_address, order)
        self.peer = address_from_int(config.centre_address, order)
        self.memory = DeliveryMemory()  # the centre's packets, across reconnects
        self.stats: Counter[str] = Counter()
        self.connected = False
        self.connected_since: float | None = None
        self.last_error: str | None = None
        self.stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None
        self._flights: dict[int, _Flight] = {}
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s, jitter=0.5)
        self._last_expire = 0.0
        self._last_gauges = 0.0
        self.check_posts = CheckPosts(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Forwarder:
        self._thread = threading.Thread(target=self.run, name=f"upstream-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Something was queued: look now (called from the writer thread)."""
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def close(self) -> None:
        self.stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._wake_r.close()
        self._wake_w.close()

    def run(self) -> None:
        """Connect, serve, reconnect after a back-off, until :attr:`stop`. Never raises: a
        fault is counted, logged and followed by a reconnect."""
        while not self.stop.is_set():
            self._expire()
            self.check_posts.answer_acknowledged()
            try:
                sock = socket.create_connection((self.config.host, self.config.port),
                                                timeout=CONNECT_TIMEOUT_S)
            except OSError as exc:
                self._down(f"connect: {exc}")
                self._pause()
                continue
            self.stats["connects"] += 1
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._serve(sock)
            except LinkDown as exc:
                self._down(str(exc))
            except OSError as exc:
                self._down(f"socket: {exc}")
            except Exception as exc:  # the thread must go on; logged in full
                self.stats["errors"] += 1
                log.exception("upstream %s: unexpected error; reconnecting", self.name)
                self._down(f"error: {exc!r}")
            finally:
                sock.close()
                self._flights.clear()
                self.connected = False
                self._gauge()
            if not self.stop.is_set():
                self._pause()

    def _pause(self) -> None:
        """Wait out the back-off (woken early only by :meth:`close`)."""
        deadline = time.monotonic() + self._backoff.next()
        self._drain_wake()
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.gauges()  # the queue grows while the centre is away: show it
            self.check_posts.answer_acknowledged()  # queued now, sent once the link is up
            self.stop.wait(min(left, IDLE_POLL_S))

    def gauges(self, force: bool = False) -> None:
        """Queue depth (cheap, from memory) and the oldest upload's age (a query: at most
        once a second)."""
        if self.metrics is None:
            return
        self.metrics.upstream_queue_depth.set(float(self.queue.pending(self.name)), self.name)
        now = time.monotonic()
        if force or now - self._last_gauges >= IDLE_POLL_S:
            self._last_gauges = now
            _, _, oldest = self.queue.depth(self.name)
            age = 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)
            self.metrics.upstream_oldest_seconds.set(round(age, 3), self.name)

    def _down(self, why: str) -> None:
        if self.connected or why != self.last_error:
            log.warning("upstream %s (%s:%d): link down: %s", self.name, self.config.host,
                        self.config.port, why)
        if self.connected:
            self._count("disconnects")
        self.connected = False
        self.connected_since = None
        self.last_error = why
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.upstream_connected.set(1.0 if self.connected else 0.0, self.name)

    def _count(self, what: str, n: int = 1) -> None:
        self.stats[what] += n
        if self.metrics is not None:
            self.metrics.upstream_uploads.inc(self.name, what, n=float(n))

    def _expire(self) -> None:
        now = time.monotonic()
        if now - self._last_expire >= EXPIRE_EVERY_S:
            self._last_expire = now
            self.queue.expire()

    # -- one connection ----------------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        cfg = self.config
        sock.setblocking(False)
        session = Session(self.local, self.peer, cfg.profile, cfg.timeout_s, cfg.retries,
                          clock=_label, memory=self.memory)
        decoder = StreamDecoder(cfg.profile)
        self._flights = {}
        now = time.monotonic()
        last_traffic = now
        junk = 0
        self.connected, self.connected_since, self.last_error = True, now, None
        self._gauge()
        log.info("upstream %s: connected to %s:%d", self.name, cfg.host, cfg.port)
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ, "link")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            if cfg.profile.handshake_request is not None:
                self._send(sock, session, None, time.monotonic())
            while not self.stop.is_set():
                now = time.monotonic()
                self._expire()
                self.check_posts.answer_acknowledged()
                self._fill(sock, session, now)
                if not self._flights and now - last_traffic >= cfg.keepalive_s:
                    self._send(sock, session, None, now)
                    last_traffic = now
                deadline = session.next_deadline()
                wait = IDLE_POLL_S
                if not self._flights:  # the session watches what is in flight
                    wait = min(wait, cfg.keepalive_s - (now - last_traffic))
                if deadline is not None:
                    wait = min(wait, deadline - now)
                for key, _ in sel.select(max(0.0, wait)):
                    if key.data == "wake":
                        self._drain_wake()
                        continue
                    data = sock.recv(READ_SIZE)
                    if not data:
                        raise LinkDown("closed by the centre")
                    # Only a valid frame is traffic: a centre that sends garbage (or drips
                    # bytes) must not keep an unpatrolled link looking alive.
                    if self._received(sock, session, decoder, data):
                        last_traffic = time.monotonic()
                        junk = 0
                    else:
                        junk += len(data)
                        if junk > MAX_JUNK:
                            self._count("garbage")
                            raise LinkDown(f"{junk} bytes from the centre without a valid "
                                           "frame")
                self._handle(sock, session, session.poll(time.monotonic()))
        finally:
            sel.close()
            if self._flights:
                session.reset()  # unconfirmed rows stay queued: sent again on the next link

    def _fill(self, sock: socket.socket, session: Session, now: float) -> None:
        room = self.window - len(self._flights)
        if room <= 0:
            return
        self.gauges()
        busy = [f.row.id for f in self._flights.values() if f.row is not None]
        for row in self.queue.next_rows(self.name, busy, room):
            self._send(sock, session, row, now)

    def _send(self, sock: socket.socket, session: Session, row: Row | None, now: float) -> None:
        """Send a queued upload, or a patrol (``row`` None)."""
        p = self.config.profile
        command: int = Command.SEND_DATA
        adu: RawApplicationData | ApplicationData | None = None
        if row is not None:
            adu = RawApplicationData(row.adu[0], row.adu[1], row.adu[2:])
        elif p.handshake_request is not None:
            adu = RawApplicationData(p.handshake_request[0], None, p.handshake_request[1:])
        elif p.keepalive_command is not None:
            command = p.keepalive_command
        else:  # 图13: normal monitoring, nothing raised
            adu = ApplicationData(21, (UitdStatus(UitdState(1), _label()),))
        raw = session.send(command, adu, now)
        serial = raw[2] | raw[3] << 8
        self._flights[serial] = _Flight(row, now)
        self._write(sock, raw)
        if row is not None:
            self._count("sent")
        else:
            self._count("patrols")

    def _write(self, sock: socket.socket, data: bytes) -> None:
        """Write all of ``data`` (a frame is at most 1054 bytes: the socket buffer takes it;
        a centre that stops reading long enough to fill it is a broken link)."""
        view = memoryview(data)
        deadline = time.monotonic() + self.config.timeout_s
        while view:
            try:
                n = sock.send(view)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LinkDown("the centre does not read") from None
                time.sleep(0.01)
                continue
            view = view[n:]

    def _received(self, sock: socket.socket, session: Session, decoder: StreamDecoder,
                  data: bytes) -> int:
        """Handle what the centre sent; returns how many valid frames it held."""
        events: list[SessionEvent] = []
        frames = 0
        for item in decoder.feed(data):
            if isinstance(item, DecodeError):
                self._count(f"decode_{item.kind}")
                deny = session.deny_damaged(item) if item.kind != "garbage" else None
                if deny is not None:
                    self._write(sock, deny)
                continue
            frames += 1
            events += session.receive(item, time.monotonic())
        self._handle(sock, session, events)
        return frames

    def _handle(self, sock: socket.socket, session: Session,
                events: Sequence[SessionEvent]) -> None:
        done: list[int] = []
        try:
            for ev in events:
                self._event(sock, session, ev, done)
        finally:  # the confirms of one read in one transaction
            if done:
                self.queue.confirmed(self.name, done)
                self._count("confirmed", len(done))

    def _event(self, sock: socket.socket, session: Session, ev: SessionEvent,
               done: list[int]) -> None:
        if isinstance(ev, Completed):
            flight = self._flights.pop(ev.serial, None)
            self._backoff.reset()
            if flight is not None and flight.row is not None:
                done.append(flight.row.id)
                if self.metrics is not None:
                    self.metrics.upstream_confirm_seconds.observe(
                        time.monotonic() - flight.sent_at)
        elif isinstance(ev, Resend):
            self._write(sock, ev.data)
            self._count("resent")
        elif isinstance(ev, Failed):
            self._flights.pop(ev.serial, None)
            self._count("unconfirmed")
            raise LinkDown(f"serial {ev.serial}: {ev.reason}")
        elif isinstance(ev, Incoming):
            self._incoming(sock, session, ev.frame, ev.duplicate)
        else:
            self._count("unmatched")

    def _incoming(self, sock: socket.socket, session: Session, frame: Frame,
                  duplicate: bool) -> None:
        """The centre's own packets (commands 1, 2, 4, the dialect's keep-alive)."""
        ack = session.acknowledge(frame)
        if ack is not None:
            self._write(sock, ack)
            return
        try:
            adu = decode_adu(frame.adu, self.config.profile)
        except DecodeError:
            adu = None
        mark = adu.type_mark if isinstance(adu, ApplicationData) else None
        if mark in (89, 90, 91) and frame.command in (Command.CONTROL, Command.REQUEST):
            if not duplicate:
                self._count(f"control_{mark}")
            self._write(sock, session.confirm(frame))
            if mark == 91 and not duplicate:
                assert isinstance(adu, ApplicationData)
                ask = adu.objects[0] if adu.objects else None
                self.check_posts.asked(ask.timeout_minutes if isinstance(ask, CheckPost)
                                       else 0)
        elif mark == 81 and frame.command == Command.REQUEST:
            self._write(sock, session.respond(frame, ApplicationData(
                21, (UitdStatus(UitdState(1), _label()),))))
        else:
            self._count("denied_incoming")
            self._write(sock, session.deny(frame))

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass

    # -- what status shows -------------------------------------------------------------------

    def status(self, now_ms: int) -> dict[str, object]:
        rows, size, oldest = self.queue.depth(self.name)
        counts = self.queue.counts[self.name]
        since = self.connected_since
        return {
            "name": self.name, "connect": f"{self.config.host}:{self.config.port}",
            "connected": self.connected,
            "connected_for_s": None if since is None else round(time.monotonic() - since, 1),
            "queue_depth": rows, "queue_bytes": size,
            "oldest_unconfirmed_age_s": None if oldest is None else
            round(max(0, now_ms - oldest) / 1000, 1),
            "sent": self.stats["sent"], "confirmed": self.stats["confirmed"],
            "resent": self.stats["resent"],
            "evicted": sum(n for k, n in counts.items() if k.startswith("evicted_")),
            "expired": counts["expired"], "queued": counts["queued"],
            "skipped": counts["skipped"], "no_address": counts["no_address"],
            "connects": self.stats["connects"], "disconnects": self.stats["disconnects"],
            "last_error": self.last_error,
        }


class CheckPosts:
    """The check-posts (查岗, type 91) of one higher centre, put to the people on duty
    (docs/gb26875-upstream.md, "Check-posts").

    * :meth:`asked` (the forwarder's thread, after the confirm): the deadline is kept in the
      queue's file, and an alarm raised in the book: gateway ``upstream:<name>``, source
      ``gb26875/upstream/<name>``, type ``check_post``, priority ``alarm``, at the upstream's
      ``site``. A check-post while the last one's alarm is still open re-raises it (one alarm,
      ``raise_count``) and moves the deadline to the newest. Without a book: counted
      (``check_post_unseen``) and logged, never answered.
    * :meth:`changed` (the book's subscriber, on whatever thread acknowledged: it only notes
      the alarm and wakes the forwarder): the alarm acknowledged, or resolved (which
      acknowledges it).
    * :meth:`answer_acknowledged` (the forwarder's thread): each noted alarm's answer queued
      like any upload (type 24 with bit 5, the operator number of the user who acknowledged,
      the time label of the acknowledgement), once per alarm; then the alarm is cleared, which
      closes it. An acknowledgement after the deadline is answered too, counted
      ``check_post_late`` and logged: its time label tells the centre when the person answered.
    """

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.name = forwarder.name
        self.gateway = f"upstream:{self.name}"
        self.source = f"gb26875/upstream/{self.name}"
        self.site = forwarder.config.check_post_site
        self.alarms: AlarmBook | None = None
        self._acked: deque[Alarm] = deque()  # appended by any thread, taken by the forwarder

    def asked(self, minutes: int, now_ms: int | None = None) -> None:
        """The centre checks the post: the people on duty must answer within ``minutes``
        (0: the centre gave no limit)."""
        fw = self.forwarder
        now = _now_ms() if now_ms is None else now_ms
        self.answer_acknowledged()  # an answer still waiting closes its alarm first
        due = now + minutes * 60_000 if minutes > 0 else None
        fw.queue.set_check_post_due(self.name, due)
        if self.alarms is None:
            fw._count("check_post_unseen")
            log.warning("upstream %s: check-post (查岗) from the centre, answer within %d min: "
                        "no alarm book to show it to anyone; not answered", self.name, minutes)
            return
        if due is None:
            zh, en = "未给应答时限", "no time limit given"
        else:
            by = datetime.fromtimestamp(due / 1000, fw.queue.tz).strftime("%H:%M:%S")
            zh = f"值班人员须在{minutes}分钟内（{by}前）应答"
            en = f"the operator on duty must answer within {minutes} min (by {by})"
        text = (f"上级监控中心“{self.name}”查岗：{zh}，确认本报警即应答。"
                f" Check-post from the higher monitoring centre {self.name}: {en};"
                " acknowledging this alarm answers it.")
        try:
            self.alarms.apply([Signal(RAISE, self.gateway, self.site, self.source, CHECK_POST,
                                      "alarm", text, gateway_ms=now, stamp=(now, 0))], now)
        except Exception:  # the link goes on; the check-post stays unanswered
            fw._count("check_post_errors")
            log.exception("upstream %s: the check-post's alarm could not be raised", self.name)
            return
        fw._count("check_post_alarms")
        log.info("upstream %s: check-post (查岗), answer within %d min: alarm raised at site %s",
                 self.name, minutes, self.site)

    def changed(self, change: AlarmChange) -> None:
        """A change of an alarm of this centre's gateway (the book's subscriber: must not
        block): acknowledged (or resolved, which acknowledges), it is to be answered. A
        second note of the same alarm (its clear, a later verdict) queues nothing: the
        answer's key is the alarm's id."""
        a = change.alarm
        if a.source == self.source and a.type == CHECK_POST and a.acknowledged:
            self._acked.append(a)
            self.forwarder.wake()

    def answer_acknowledged(self) -> int:
        """Queue the answers of the acknowledged check-post alarms noted so far, and clear the
        alarms; returns the answers queued (an alarm answered before queues none)."""
        n = 0
        while self._acked:
            a = self._acked.popleft()
            try:
                n += self._answer(a)
            except Exception:  # the link goes on; the alarm stays open, acknowledged
                self.forwarder._count("check_post_errors")
                log.exception("upstream %s: the answer to check-post alarm %s failed",
                              self.name, a.id)
        return n

    def _answer(self, a: Alarm) -> int:
        fw = self.forwarder
        at = a.acknowledged_ms if a.acknowledged_ms is not None else _now_ms()
        due = fw.queue.check_post_due(self.name)
        late = due is not None and at > due
        operator = fw.config.operator_of(a.acknowledged_by)
        label = TimeLabel.from_datetime(
            datetime.fromtimestamp(at / 1000, fw.queue.tz).replace(tzinfo=None))
        body = encode_adu(ApplicationData(24, (UitdOperationRecord(
            UitdOperation.CHECK_POST_ANSWER, operator, label),)), fw.config.profile.max_adu)
        n = fw.queue.enqueue_own(self.name, f"check_post:{a.id}", int(Priority.ALARM),
                                 "check_post_answer", body)
        if n:
            fw._count("check_post_answered")
            if late:
                assert due is not None
                fw._count("check_post_late")
                log.warning("upstream %s: check-post alarm %s acknowledged by %s %.0f s after "
                            "its deadline: answered late (operator %d)", self.name, a.id,
                            a.acknowledged_by, (at - due) / 1000, operator)
            else:
                log.info("upstream %s: check-post alarm %s acknowledged by %s: answered "
                         "(operator %d)", self.name, a.id, a.acknowledged_by, operator)
            fw.wake()
        if self.alarms is not None:  # acknowledged and cleared: closed
            self.alarms.apply([Signal(CLEAR, self.gateway, self.site, self.source,
                                      CHECK_POST)])
        return n


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Forwarding:
    """The queue and every upstream's forwarder of one collector."""

    def __init__(self, state_dir: Path, upstreams: Sequence[UpstreamConfig],
                 metrics: Metrics | None = None, *, tz: tzinfo | None = None,
                 window: int = WINDOW, alarms: AlarmBook | None = None) -> None:
        """``alarms``: the book check-posts open their alarms in (None: counted and logged
        only, never answered)."""
        self.queue = UpstreamQueue(state_dir / FILE_NAME, upstreams, tz=tz, metrics=metrics)
        self.forwarders = [Forwarder(u, self.queue, metrics, window=window)
                           for u in upstreams]
        self.metrics = metrics
        self.alarms = alarms
        self._unsubscribe: Callable[[], None] | None = None
        if alarms is not None:
            by_gateway = {f.check_posts.gateway: f.check_posts for f in self.forwarders}
            for f in self.forwarders:
                f.check_posts.alarms = alarms

            def changed(change: Change) -> None:
                if isinstance(change, AlarmChange):
                    cp = by_gateway.get(change.alarm.gateway)
                    if cp is not None:
                        cp.changed(change)
            self._unsubscribe = alarms.subscribe(changed)
            # Acknowledged while the collector was down (the command line), or killed between
            # an acknowledgement and its answer: answered now (once per alarm: the key).
            for a in alarms.open_alarms():
                cp = by_gateway.get(a.gateway)
                if cp is not None:
                    cp.changed(AlarmChange(a, ACKNOWLEDGED))

    def offer(self, offers: Sequence[Offer]) -> int:
        """Queue stored events (writer thread; durable when this returns) and wake the links."""
        n = self.queue.enqueue(offers)
        if n:
            for f in self.forwarders:
                if self.metrics is not None:
                    self.metrics.upstream_queue_depth.set(float(self.queue.pending(f.name)),
                                                          f.name)
                f.wake()
        return n

    def start(self) -> Forwarding:
        for f in self.forwarders:
            f.start()
        return self

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for f in self.forwarders:
            f.close()
        self.queue.close()

    def status(self, now_ms: int) -> list[dict[str, object]]:
        return [f.status(now_ms) for f in self.forwarders]
