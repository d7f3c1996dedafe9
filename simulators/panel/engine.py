"""The simulated UITD as a sans-I/O engine: bytes and the time in, transmissions out.

The engine owns the codec's :class:`~protocols.gb26875.Session` (serials, confirm/deny, resends
per §6.5) and :class:`~protocols.gb26875.StreamDecoder`, the building's :class:`PanelModel`, the
timeline, the fault injection and the :class:`UploadLedger`. It never touches a port: the runner
(:mod:`simulators.panel.runner`) feeds it received bytes and the scenario time, writes the
:class:`Transmission` objects it returns and calls :meth:`UitdEngine.poll` at
:meth:`UitdEngine.next_deadline`. Tests drive it directly, on a manual time, against a centre
built from the same codec.

Behaviour of the UITD (GB/T 26875.3 §5, §6 and GB 26875.1 4.1.2.3):

* Uploads (command 2) go out **one at a time**: the next waits for the confirm (command 3) of the
  previous one, or for its failure after every resend. Fire alarms jump the queue (they are not
  pre-empted once sent); periodic state comes last.
* No confirm within the timeout, or a deny (command 6): the same bytes again, up to ``retries``
  times; then the upload has failed, the ledger says so and the UITD shows a link fault (图13 bit
  5) until the next confirm.
* A link that drops (TCP closed, ``link_loss``) fails nothing: what was in flight is queued again
  and sent, with new serials, when the link is back (a UITD keeps its records, GB 26875.1).
* Reads (command 4, types 61-88) are answered with command 5 and the matching upload type
  (:data:`~protocols.gb26875.RESPONSE_TYPE`) from the model; unknown systems or components are
  left out, and a read naming none that exists is denied. Types 89, 90 and 91 are accepted in
  command 1 or 4 and confirmed; a retransmitted control is confirmed again but executed once.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from protocols.gb26875 import (
    RESPONSE_TYPE,
    SPECS,
    Adu,
    ApplicationData,
    CheckPost,
    ClockSync,
    Command,
    Completed,
    ComponentState,
    ComponentStatus,
    DecodeError,
    EncodeError,
    ErrorKind,
    Failed,
    Frame,
    Incoming,
    InfoObject,
    RawApplicationData,
    Resend,
    Session,
    SessionEvent,
    StreamDecoder,
    SystemState,
    SystemStatus,
    TimeLabel,
    UitdOperation,
    UitdState,
    address_from_int,
    decode_adu,
)

from .clock import PanelClock
from .faults import FAULTS, Faults, Transmission
from .ledger import LedgerEntry, Status, UploadLedger
from .model import (
    COMPONENT_CONDITIONS,
    OPERATIONS,
    SYSTEM_CONDITIONS,
    UITD_CONDITIONS,
    PanelModel,
    SystemKey,
)
from .reads import answer_read, stamp
from .scenario import PanelSpec
from .timeline import NEVER, TimelineEvent

FIRE, STATE, PERIODIC = 0, 1, 2  # upload priorities: lower goes first
LINK_RESET = "link reset"
_ALL_SYSTEM = SystemState(sum(SYSTEM_CONDITIONS.values()))
_ALL_UITD = UitdState(sum(UITD_CONDITIONS.values()))


@dataclass(slots=True)
class _Outgoing:
    """Something the UITD initiates: an upload (with its ledger entry) or link supervision."""

    command: int
    adu: Adu | None
    priority: int
    entry: LedgerEntry | None = None
    what: str = ""


class UitdEngine:
    """One simulated UITD and the facility behind it."""

    def __init__(self, config: PanelSpec, *, ledger: UploadLedger | None = None,
                 start: datetime | None = None) -> None:
        cfg = config.with_defaults()
        self.config = cfg
        self.profile = cfg.profile
        self.clock = PanelClock(cfg.start_time or start)
        self.model = PanelModel(cfg.systems, cfg.components, cfg.uitd, cfg.normal_bit)
        self.ledger = ledger if ledger is not None else UploadLedger()
        self.faults = Faults(cfg.faults)
        order = self.profile.address_byte_order
        self.local = address_from_int(cfg.uitd_address, order)
        self.peer = address_from_int(cfg.centre_address, order)
        self.session: Session | None = None
        self.decoder = StreamDecoder(self.profile)
        self.stats: Counter[str] = Counter()
        self.check_post_answer = cfg.check_post_answer
        self.on_event: Callable[[TimelineEvent], None] | None = None  # the CLI prints events
        self._now = 0.0
        self._timeline = deque(cfg.events)
        self._queue: list[tuple[int, int, _Outgoing]] = []
        self._seq = itertools.count()
        self._inflight: dict[int, _Outgoing] = {}
        self._check_post_due: float | None = None
        self._periodic_next = cfg.periodic_interval or None
        self._silent_until: float | None = None
        self._last_tx = 0.0
        self._supervise = (self.profile.keepalive_command is not None
                           or self.profile.handshake_request is not None)
        self.model.link_fault = True  # until a centre is there
        self.model.reset(self.label())

    # -- time --------------------------------------------------------------------------------

    def label(self, now: float | None = None) -> TimeLabel:
        """The panel clock's time label at scenario time ``now`` (default: the last seen)."""
        return self.clock.label(self._now if now is None else now)

    # -- link lifecycle ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.session is not None

    @property
    def silent(self) -> bool:
        """True during a ``link_loss``."""
        return self._silent_until is not None

    def connect(self, now: float) -> list[Transmission]:
        """A link to the centre is up: a fresh session (serials restart, 表1)."""
        self._now = now
        self.session = Session(self.local, self.peer, self.profile, self.config.confirm_timeout,
                               self.config.retries, clock=self.label)
        self.decoder = StreamDecoder(self.profile)
        self.model.link_fault = False
        self._last_tx = now
        self.ledger.log("link_up", now)
        if self.profile.handshake_request is not None:
            self._push(_Outgoing(Command.SEND_DATA,
                                 RawApplicationData(self.profile.handshake_request[0], None), -1,
                                 what="handshake"))
        return self._pump(now)

    def disconnect(self, now: float) -> None:
        """The link dropped: what was in flight is queued again (not failed)."""
        self._now = now
        if self.session is not None:
            self._requeue_open(now)
            self.session = None
        self.model.link_fault = True
        self.ledger.log("link_down", now)

    def _requeue_open(self, now: float) -> None:
        assert self.session is not None
        for ev in self.session.reset():
            if isinstance(ev, Failed):
                out = self._inflight.pop(ev.serial, None)
                if out is not None and out.entry is not None:
                    self.ledger.requeued(out.entry, now, ev.reason)
                    self._push(out)
        self._inflight.clear()

    # -- inputs ------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Transmission]:
        """Bytes from the centre."""
        self._now = now
        if self.silent or self.session is None:
            self.stats["bytes_ignored"] += len(data)
            return []
        out: list[Transmission] = []
        for item in self.decoder.feed(data):
            if isinstance(item, DecodeError):
                out += self._damaged(item, now)
            else:
                out += self._handle(self.session.receive(item, now), now, "denied")
        return out + self._pump(now)

    def poll(self, now: float) -> list[Transmission]:
        """Apply what is due at ``now``: the timeline, timers, timeouts; send what can go."""
        self._now = now
        out: list[Transmission] = []
        if self._silent_until is not None and now >= self._silent_until:
            self._silent_until = None
            self.ledger.log("link_back", now)
        while self._timeline and self._timeline[0].at <= now:
            self._apply(self._timeline.popleft(), now)
        if self._check_post_due is not None and now >= self._check_post_due:
            self._check_post_due = None
            record = self.model.uitd_operate(UitdOperation.CHECK_POST_ANSWER, self.label())
            self._queue_upload("check_post_answer", 24, [record], STATE)
        while self._periodic_next is not None and now >= self._periodic_next:
            self._periodic_next += self.config.periodic_interval
            if not any(o.entry and o.entry.action == "periodic" for _, _, o in self._queue):
                self._queue_state("periodic", PERIODIC)
        if self.session is not None and not self.silent:
            out += self._handle(self.session.poll(now), now, "no confirm")
            if (self._supervise and not self._queue and not self._inflight
                    and now >= self._last_tx + self.config.keepalive_interval):
                self._push(self._keepalive())
        return out + self._pump(now)

    def trigger(self, event: TimelineEvent, now: float) -> list[Transmission]:
        """Apply an action now, outside the timeline (API and tests)."""
        self._now = now
        self._apply(event, now)
        return self._pump(now)

    def next_deadline(self) -> float | None:
        """The scenario time at which :meth:`poll` has something to do."""
        times = [self._check_post_due, self._periodic_next, self._silent_until]
        if self._timeline:
            times.append(self._timeline[0].at)
        if self.session is not None and not self.silent:
            times.append(self.session.next_deadline())
            if self._supervise and not self._inflight:
                times.append(self._last_tx + self.config.keepalive_interval)
        return min((t for t in times if t is not None), default=None)

    @property
    def pending(self) -> int:
        """Uploads queued or in flight."""
        return len(self._queue) + len(self._inflight)

    @property
    def timeline_left(self) -> int:
        return len(self._timeline)

    # -- outgoing ----------------------------------------------------------------------------

    def _push(self, out: _Outgoing) -> None:
        heapq.heappush(self._queue, (out.priority, next(self._seq), out))

    def _pump(self, now: float) -> list[Transmission]:
        """Send the next queued item if nothing is in flight (one transaction at a time)."""
        if self.session is None or self.silent or self._inflight or not self._queue:
            return []
        _, _, out = heapq.heappop(self._queue)
        try:
            raw = self.session.send(out.command, out.adu, now)
        except EncodeError as exc:  # e.g. an ADU over a dialect's 512-byte limit
            if out.entry is not None:
                self.ledger.finish(out.entry, Status.FAILED, now, f"cannot encode: {exc}")
            return self._pump(now)
        serial = raw[2] | raw[3] << 8
        self._inflight[serial] = out
        if out.entry is not None:
            self.ledger.transmitted(out.entry, serial, now, resend=False)
        return [self._shape(raw, out, serial, now)]

    def _shape(self, raw: bytes, out: _Outgoing, serial: int, now: float) -> Transmission:
        self._last_tx = now
        what = f"{out.what or 'upload'} serial {serial}"
        tx, hits = self.faults.shape(raw, upload=out.command == Command.SEND_DATA, what=what)
        for hit in hits:
            self.stats[f"injected_{hit}"] += 1
            self.ledger.log("injected", now, out.entry, fault=hit, serial=serial)
        return tx

    def _keepalive(self) -> _Outgoing:
        p = self.profile
        if p.keepalive_command is not None:
            return _Outgoing(p.keepalive_command, None, PERIODIC, what="keepalive")
        assert p.handshake_request is not None
        return _Outgoing(Command.SEND_DATA, RawApplicationData(p.handshake_request[0], None),
                         PERIODIC, what="handshake")

    def _queue_upload(self, action: str, type_mark: int, objects: Sequence[InfoObject],
                      priority: int) -> LedgerEntry:
        adu = ApplicationData(type_mark, stamp(self.profile, type_mark, objects, self.label()))
        if priority > FIRE and any(_is_fire(o) for o in adu.objects):
            priority = FIRE
        entry = self.ledger.add(action, adu, self._now, priority)
        self._push(_Outgoing(Command.SEND_DATA, adu, priority, entry, action))
        return entry

    def _queue_state(self, action: str, priority: int, label: TimeLabel | None = None) -> None:
        self._queue_upload(action, 21, [self.model.uitd_status(label or self.label())], priority)
        systems = [self.model.system_status(k) for k in self.model.all_systems()]
        # 102 per frame (§8.2.1), fewer under a smaller ADU limit (Hikvision: 512 bytes -> 51).
        per = min(SPECS[1].max_count, (self.profile.max_adu - 2) // 10)
        for k in range(0, len(systems), per):
            self._queue_upload(action, 1, systems[k:k + per], priority)

    # -- session events ----------------------------------------------------------------------

    def _handle(self, events: list[SessionEvent], now: float, why: str) -> list[Transmission]:
        out: list[Transmission] = []
        assert self.session is not None
        for ev in events:
            if isinstance(ev, Resend):
                item = self._inflight.get(ev.serial)
                if item is None:  # pragma: no cover - the session only resends what we sent
                    continue
                if item.entry is not None:
                    self.ledger.transmitted(item.entry, ev.serial, now, resend=True, why=why)
                out.append(self._shape(ev.data, item, ev.serial, now))
            elif isinstance(ev, Completed):
                item = self._inflight.pop(ev.serial, None)
                self.model.link_fault = False
                if item is not None and item.entry is not None:
                    self.ledger.finish(item.entry, Status.CONFIRMED, now)
                elif item is not None:
                    self.stats[f"{item.what}_confirmed"] += 1
            elif isinstance(ev, Failed):
                item = self._inflight.pop(ev.serial, None)
                self.model.link_fault = True
                if item is not None and item.entry is not None:
                    self.ledger.finish(item.entry, Status.FAILED, now, ev.reason)
                elif item is not None:
                    self.stats[f"{item.what}_failed"] += 1
            elif isinstance(ev, Incoming):
                out += self._incoming(ev.frame, ev.duplicate, now)
            else:
                self.stats["unmatched"] += 1
                self.ledger.log("unmatched", now, serial=ev.frame.serial,
                                command=ev.frame.command)
        return out

    def _damaged(self, error: DecodeError, now: float) -> list[Transmission]:
        """A frame that failed its check: deny it (§6.5.3) when its header is readable."""
        self.stats[f"decode_{error.kind}"] += 1
        if error.kind is ErrorKind.GARBAGE:
            return []
        assert self.session is not None
        deny = self.session.deny_damaged(error)
        self.ledger.log("damaged", now, kind=str(error.kind), denied=deny is not None)
        return self._answers([deny] if deny else [], now, "deny damaged")

    def _answers(self, frames: list[bytes], now: float, what: str) -> list[Transmission]:
        """Answers to the centre's packets, through the answer faults."""
        if not frames:
            return []
        if self.faults.take("withhold_confirm"):
            self.stats["injected_withhold_confirm"] += 1
            self.ledger.log("injected", now, fault="withhold_confirm", what=what)
            return []
        if self.faults.take("duplicate_confirm"):
            self.stats["injected_duplicate_confirm"] += 1
            self.ledger.log("injected", now, fault="duplicate_confirm", what=what)
            frames = frames + frames
        out = []
        for raw in frames:
            tx, hits = self.faults.shape(raw, upload=False, what=what)
            for hit in hits:
                self.ledger.log("injected", now, fault=hit, what=what)
            out.append(tx)
        return out

    # -- the centre's packets ----------------------------------------------------------------

    def _incoming(self, frame: Frame, duplicate: bool, now: float) -> list[Transmission]:
        assert self.session is not None
        self.stats["received"] += 1
        if frame.command not in (Command.CONTROL, Command.REQUEST):
            ack = self.session.acknowledge(frame)  # uploads, the dialect's keep-alive
            reply = ack if ack is not None else self.session.deny(frame)
            self.ledger.log("acknowledged" if ack else "denied", now, serial=frame.serial,
                            command=frame.command)
            return self._answers([reply], now, f"answer serial {frame.serial}")
        reply, note = self._execute(frame, duplicate, now)
        self.ledger.log(note["event"], now, serial=frame.serial, command=frame.command,
                        duplicate=duplicate, **{k: v for k, v in note.items() if k != "event"})
        return self._answers([reply], now, f"{note['event']} serial {frame.serial}")

    def _execute(self, frame: Frame, duplicate: bool, now: float) -> tuple[bytes,
                                                                          dict[str, Any]]:
        """The answer to a control or request, and a note for the ledger."""
        assert self.session is not None
        try:
            adu = decode_adu(frame.adu, self.profile)
        except DecodeError as exc:
            return self.session.deny(frame), {"event": "denied", "why": exc.detail}
        if not isinstance(adu, ApplicationData):
            return self.session.deny(frame), {"event": "denied", "why": "no known type mark"}
        t = adu.type_mark
        if t in (89, 90, 91):
            if t == 90:
                clock = adu.objects[0]
                assert isinstance(clock, ClockSync)
                to = clock.clock.to_datetime()
                if to is None:
                    return self.session.deny(frame), {"event": "denied", "type_mark": t,
                                                      "why": f"invalid time {clock.clock}"}
            if not duplicate:
                self._control(adu, now)
            return self.session.confirm(frame), {"event": "executed", "type_mark": t}
        if t in RESPONSE_TYPE and frame.command == Command.REQUEST:
            answer = answer_read(self.model, self.profile, adu, self.label())
            if answer is None:
                return self.session.deny(frame), {"event": "denied", "type_mark": t,
                                                  "why": "nothing known by that reference"}
            reply = self.session.respond(frame, answer)
            return reply, {"event": "answered", "type_mark": t,
                           "response_type": answer.type_mark, "count": len(answer.objects)}
        return self.session.deny(frame), {"event": "denied", "type_mark": t,
                                          "why": f"type {t} not accepted in command "
                                                 f"{frame.command}"}

    def _control(self, adu: ApplicationData, now: float) -> None:
        obj = adu.objects[0]
        if isinstance(obj, ClockSync):
            to = obj.clock.to_datetime()
            assert to is not None
            shift = self.clock.sync(to, now)
            self.ledger.log("clock_synced", now, to=to.isoformat(sep=" "),
                            shift=shift.total_seconds())
        elif isinstance(obj, CheckPost):
            window = obj.timeout_minutes * 60.0 if obj.timeout_minutes else NEVER
            after = self.check_post_answer
            if after == NEVER or after > window:
                self._check_post_due = None
                self.ledger.log("check_post", now, answer="never" if after == NEVER
                                else "too late", timeout_minutes=obj.timeout_minutes)
            else:
                self._check_post_due = now + after
                self.ledger.log("check_post", now, answer_at=round(now + after, 3),
                                timeout_minutes=obj.timeout_minutes)
        else:  # 89: initialise
            self.model.reset(self.label())
            self.model.link_fault = False
            self._check_post_due = None
            self.ledger.log("initialised", now)

    # -- scenario actions --------------------------------------------------------------------

    def _system_of(self, ev: TimelineEvent) -> SystemKey:
        if ev.system is not None:
            return ev.system
        if ev.component is not None:
            return self.model.component(ev.component).system_key
        return self.config.systems[0].key

    def _apply(self, ev: TimelineEvent, now: float) -> None:
        if self.on_event is not None:
            self.on_event(ev)
        self.stats[f"action_{ev.action}"] += 1
        # Labelled with when it happened (its ``at``), however late the engine got to it: the
        # time labels of a scenario do not depend on how busy the machine is.
        a, m, label = ev.action, self.model, self.label(min(ev.at, now))
        if a in COMPONENT_CONDITIONS or a in ("stop", "enable"):
            assert ev.component is not None
            if a == "stop":
                obj = m.set_component(ev.component, ComponentState.STARTED
                                      | ComponentState.FEEDBACK, False, label)
            elif a == "enable":
                obj = m.set_component(ev.component, ComponentState.DISABLED, False, label)
            else:
                obj = m.set_component(ev.component, COMPONENT_CONDITIONS[a], True, label)
            if obj is not None:
                self._queue_upload(a, 2, [obj], STATE)
        elif a == "restore":
            self._restore(ev, label)
        elif a == "analog":
            assert ev.component is not None and ev.analog_type is not None
            assert ev.value is not None
            self._queue_upload(a, 3, [m.set_analog(ev.component, ev.analog_type, ev.value,
                                                   label)], STATE)
        elif a in OPERATIONS:
            key = self._system_of(ev)
            record = m.operate(key, OPERATIONS[a], ev.operator, label)
            self._queue_upload(a, 4, [record], STATE)
            if a == "reset":
                self._queue_upload(a, 1, [m.system_status(key, label)], STATE)
        elif a in ("mains_fault", "backup_fault", "bus_fault"):
            if ev.uitd:
                if m.set_uitd(UITD_CONDITIONS[a], True):
                    self._queue_upload(a, 21, [m.uitd_status(label)], STATE)
            else:
                status = m.set_system(self._system_of(ev), SYSTEM_CONDITIONS[a], True, label)
                if status is not None:
                    self._queue_upload(a, 1, [status], STATE)
        elif a == "state":
            self._queue_state(a, STATE, label)
        elif a == "check_post_answer":
            assert ev.after is not None
            self.check_post_answer = ev.after
        elif a in FAULTS:
            self.faults.arm(a, ev.count, garbage_bytes=ev.bytes, split_parts=ev.parts,
                            split_gap=ev.gap)
        elif a == "link_loss":
            assert ev.duration is not None
            self._silence(now, ev.duration)
        else:  # pragma: no cover - the scenario validates action names
            raise ValueError(f"unknown action {a!r}")

    def _restore(self, ev: TimelineEvent, label: TimeLabel) -> None:
        m = self.model
        if ev.component is not None:
            obj = m.restore_component(ev.component, label)
            if obj is not None:
                self._queue_upload("restore", 2, [obj], STATE)
        elif ev.uitd:
            if m.set_uitd(_ALL_UITD, False):
                self._queue_upload("restore", 21, [m.uitd_status(label)], STATE)
        else:
            status = m.set_system(self._system_of(ev), _ALL_SYSTEM, False, label)
            if status is not None:
                self._queue_upload("restore", 1, [status], STATE)

    def _silence(self, now: float, duration: float) -> None:
        """Link loss: stop sending and answering; what was in flight goes back to the queue."""
        self._silent_until = max(self._silent_until or 0.0, now + duration)
        self.ledger.log("link_lost", now, duration=duration)
        if self.session is not None:
            self._requeue_open(now)
        self.decoder = StreamDecoder(self.profile)
        self.model.link_fault = True


def _is_fire(obj: InfoObject) -> bool:
    if isinstance(obj, ComponentStatus):
        return bool(obj.state & ComponentState.FIRE_ALARM)
    if isinstance(obj, SystemStatus):
        return bool(obj.state & SystemState.FIRE_ALARM)
    return False
