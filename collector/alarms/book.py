"""The alarm book: every alarm's lifecycle, persisted, and its escalation (docs/alarms.md).

Thread-safe: the collector's writer thread feeds it (:meth:`AlarmBook.apply`, before the MQTT
message that carried the records is acknowledged), the API thread reads it and acknowledges or
resolves alarms, and the ``alarm-escalation`` thread fires the steps that come due. Every
method takes one lock and holds it only for in-memory work and one SQLite transaction.

Open alarms are kept in memory (by key and by id, with a heap of their step timers, and in
newest-first order overall and per site, which is what :meth:`AlarmBook.list` reads); closed
ones only in the file, for ``[alarms] retention_days``. Subscribers are called after a change
is persisted, on the thread that made it, outside the lock.
"""

from __future__ import annotations

import bisect
import builtins
import dataclasses
import hashlib
import heapq
import itertools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from collector.alarms.config import AlarmsConfig, EscalationPolicy
from collector.alarms.escalation import EscalationLoop, due_ms, policy_for, step_notification
from collector.alarms.model import (
    ACKNOWLEDGED,
    ACTIVE,
    CLEARED,
    CLEARED_WHAT,
    ESCALATION_STOPPED,
    NOTIFIED,
    RAISED,
    RE_RAISED,
    RESOLVED,
    VERDICTS,
    Alarm,
    AlarmChange,
    AlarmConflict,
    AlarmNotFound,
    AuditEntry,
    Change,
    SiteChange,
    TimelineEntry,
    Verdict,
)
from collector.alarms.store import AlarmStore, Stored
from collector.config import DEFAULT_RESET_CLEARS
from collector.notify import FIRE_KINDS, Notification
from collector.risk import compare_record_times, reset_prefix
from protocols.wire import DEFAULT_PRIORITY, Event, EventType, Priority

__all__ = ["ALARM_EVENTS", "AlarmBook", "Signal", "event_signal", "gateway_signal",
           "select_alarms"]

log = logging.getLogger("firegate.collector.alarms")

ALARM_EVENTS: frozenset[EventType] = frozenset(
    t for t, p in DEFAULT_PRIORITY.items() if p <= Priority.ALARM)
"""Event types that open an alarm: the wire contract's fire and alarm classes."""
RAISE, CLEAR, RESET = "raise", "clear", "reset"
MAX_TEXT = 100_000
OVERFLOW_SOURCE = "alarms/overflow"
"""The source of a gateway's overflow fire alarm: fire alarms past
``max_open_fire_per_gateway`` re-raise it instead of opening alarms of their own."""
"""A note longer than this is refused (the API's own limit is lower)."""
STATES = ("active", "cleared", "open", "closed", "all")
_STATE_SQL = {"active": "state = 'active'", "cleared": "state = 'cleared'", "open": "open = 1",
              "closed": "open = 0", "all": "1 = 1"}
Key = tuple[str, str, str]
Order = tuple[int, str]
"""An alarm's place in a list: (-raised_ms, id), ascending is newest first (the SQL order
``raised_ms DESC, id``; neither value changes while the alarm lives)."""
Scope = tuple[str, ...] | None
"""The sites a list may show (None: every site)."""
SCOPE_CACHE = 256
"""Users' site filters remembered with the sites they match (cleared when full)."""
MERGE_SITES = 64
"""A list scoped to at most this many sites merges their own orders; past it, it walks the
overall order and skips other sites' alarms."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Signal:
    """One thing the writer stored that opens, re-raises, clears or resets alarms."""

    what: str
    """``raise``, ``clear`` or ``reset`` (a panel reset: clears ``reset_clears`` alarms)."""
    gateway: str
    site: str
    source: str
    type: str
    priority: str = "alarm"
    description: str = ""
    gateway_ms: int | None = None
    panel_ms: int | None = None
    stamp: tuple[int, int] | None = None
    """(store epoch, seq) of the record; None for a gateway-level condition."""

    @property
    def key(self) -> Key:
        return (self.gateway, self.source, self.type)


def event_signal(gateway: str, site: str, event: Event, epoch: int) -> Signal | None:
    """What a stored event means for the book; None: nothing."""
    t = event.type
    if t is EventType.RESET or (t is EventType.OPERATION and "reset" in event.operations):
        return Signal(RESET, gateway, site, event.source.id, t.value,
                      gateway_ms=event.receive_ms, panel_ms=event.source_ms,
                      stamp=(epoch, event.seq))
    if t not in ALARM_EVENTS:
        return None
    if not event.active:
        return Signal(CLEAR, gateway, site, event.source.id, t.value, stamp=(epoch, event.seq))
    parts = [event.source.description or ""]
    if event.value is not None:
        parts.append(f"{event.value:g}" + ("" if event.limit is None else
                                           f" (limit {event.limit:g})"))
    if event.detail:
        parts.append(event.detail)
    return Signal(RAISE, gateway, site, event.source.id, t.value, event.priority.label,
                  " ".join(p for p in parts if p), event.receive_ms, event.source_ms,
                  (epoch, event.seq))


def gateway_signal(gateway: str, site: str, kind: str, active: bool, text: str = ""
                   ) -> Signal:
    """A gateway-level condition (``gateway_offline``, ``records_missing``) raised or
    cleared."""
    return Signal(RAISE if active else CLEAR, gateway, site, "", kind, "alarm", text)


def _raised_at(s: Signal) -> tuple[int, int | None] | None:
    return None if s.gateway_ms is None else (s.gateway_ms, s.panel_ms)


def _raised_by(st: Stored, reset: Signal, same_clock: bool) -> bool:
    """Whether the alarm's latest raise came at or before ``reset``: by the panel's clock when
    both have one from the same panel, else the gateway's receive times; at the same time, by
    the gateway's record order (a raise recorded after the reset stays, on the safe side)."""
    at = _raised_at(reset)
    if st.raised_at is None or at is None:
        return _newer(reset.stamp, st.stamp)
    order = compare_record_times(*st.raised_at, *at, same_clock=same_clock)
    return order < 0 or (order == 0 and _newer(reset.stamp, st.stamp))


def _newer(stamp: tuple[int, int] | None, than: tuple[int, int] | None) -> bool:
    """Whether a record stamped ``stamp`` comes after one stamped ``than``: the same store
    epoch compares seqs; another epoch (the gateway's store was replaced) is newer."""
    if stamp is None or than is None:
        return True
    return stamp[0] != than[0] or stamp[1] > than[1]


class AlarmBook:
    """Alarms by (gateway, source, type): opened, re-raised, cleared, acknowledged, resolved,
    escalated; persisted in ``path`` (docs/alarms.md)."""

    def __init__(self, path: Path, policies: Sequence[EscalationPolicy] = (), *,
                 notify: Callable[[Sequence[Notification]], int] | None = None,
                 config: AlarmsConfig | None = None,
                 reset_clears: frozenset[str] = DEFAULT_RESET_CLEARS,
                 ack_url_base: str | None = None,
                 clock: Callable[[], int] = _now_ms) -> None:
        """``notify`` queues notifications durably (:meth:`collector.notify.Notifier.enqueue`);
        ``ack_url_base`` is the API's address for the links in them (None: no link)."""
        self.policies = tuple(policies)
        self._by_name = {p.name: p for p in self.policies}
        self._notify = notify
        self.config = config or AlarmsConfig()
        self.reset_clears = reset_clears
        self.ack_url_base = ack_url_base
        self._clock = clock
        self._lock = threading.RLock()
        self._store = AlarmStore(path)
        self._open: dict[Key, Stored] = {}
        self._ids: dict[str, Stored] = {}
        self._timers: list[tuple[int, str]] = []
        self._subscribers: list[Callable[[Change], None]] = []
        # open alarms per gateway: a panel reset looks only at its own gateway's (500 resets
        # among 10,000 open alarms walked them all, 0.15 s on the writer's thread)
        self._per_gateway: dict[str, dict[Key, Stored]] = {}
        self._order: builtins.list[Order] = []  # open alarms, newest first
        self._by_site: dict[str, builtins.list[Order]] = {}  # the same, per site
        self._sites: set[str] = set()  # every site the book has (open or in the file)
        self._scopes: dict[Callable[[str], bool], tuple[int, tuple[str, ...]]] = {}
        self.refused: dict[str, int] = {}
        """Per gateway: alarms not opened, past ``max_open_per_gateway``."""
        self.folded: dict[str, int] = {}
        """Per gateway: fire alarms counted into its overflow alarm, past
        ``max_open_fire_per_gateway``."""
        self.wake = threading.Event()
        """Set when a timer sooner than the others is set (wakes the escalation loop)."""
        self._sites.update(self._store.sites())
        moved = []
        for st in self._store.open_alarms():
            self._index(st)
            before = st.alarm.next_step_ms
            self._reschedule(st, load=True)  # from the policies as configured now
            if st.alarm.next_step_ms != before:
                moved.append(st)
        if moved:  # the policies changed since the last run: the file says so too
            self._store.save(moved, [])
        self._loop = EscalationLoop(self.fire_due, self.prune, self.wake, clock=clock)
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> AlarmBook:
        """Start the ``alarm-escalation`` thread (steps already due fire at once)."""
        self._loop.start()
        return self

    def close(self) -> None:
        """Stop the thread and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._loop.close()
        with self._lock:
            self._store.close()

    # -- the writer's side -------------------------------------------------------------------

    def apply(self, signals: Sequence[Signal], now_ms: int | None = None) -> int:
        """Apply stored records' signals in order; persisted on return, and the steps that are
        due at once (``after_s = 0``) queued. Returns how many alarms changed."""
        if not signals:
            return 0
        now = self._clock() if now_ms is None else now_ms
        batch = _Batch(now, self.config.max_timeline)
        with self._lock:
            for s in signals:
                if s.what == RAISE:
                    self._raise(s, batch)
                elif s.what == CLEAR:
                    st = self._open.get(s.key)
                    if st is not None and _newer(s.stamp, st.stamp):
                        if s.stamp is not None:
                            st.stamp = s.stamp
                        self._clear(st, batch)
                elif s.what == RESET:
                    self._reset(s, batch)
            touched = list(batch.touched.values())
            for st in touched:
                self._reschedule(st, batch)
            changes: list[Change] = [AlarmChange(st.alarm, batch.what[st.alarm.id])
                                     for st in touched]
            # One transaction for the changes and the steps due at once (after_s = 0), whose
            # notifications are queued first: a crash in between leaves the records
            # unacknowledged, and their redelivery opens the same alarm ids (made from the
            # record), so those steps are queued again under the same keys: sent once.
            changes += self._fire(now, batch)
            for st in touched:
                if not st.alarm.open:
                    self._unindex(st)
        self._publish(changes)
        return len(touched)

    def _raise(self, s: Signal, batch: _Batch) -> None:
        st = self._open.get(s.key)
        if st is None:
            n = len(self._per_gateway.get(s.gateway, ()))
            fire = s.priority == "fire" or s.type in FIRE_KINDS
            if n >= self.config.max_open_per_gateway and not fire:
                self._refuse(s)
                return
            if fire and n >= self.config.max_open_fire_per_gateway and \
                    s.source != OVERFLOW_SOURCE:
                self._refuse(s, folded=True)
                self._raise(dataclasses.replace(
                    s, source=OVERFLOW_SOURCE, description=(
                        f"more than {self.config.max_open_fire_per_gateway} open alarms "
                        f"(max_open_fire_per_gateway): further fire alarms are counted here "
                        f"(raise_count); the first from {s.source}: {s.description}"
                    )[:MAX_TEXT]), batch)
                return
            policy = policy_for(self.policies, s.type, s.site)
            alarm = Alarm(
                id=self._new_id(s), gateway=s.gateway, site=s.site, source=s.source,
                description=s.description, type=s.type, priority=s.priority, state=ACTIVE,
                raised_ms=batch.now, panel_ms=s.panel_ms, cleared_ms=None, raise_count=1,
                acknowledged=False, acknowledged_by=None, acknowledged_ms=None, note=None,
                resolution=None, resolved_by=None, resolved_ms=None, resolution_note=None,
                escalation_policy=None if policy is None else policy.name,
                escalation_step=-1, gateway_ms=s.gateway_ms)
            st = Stored(alarm, s.stamp, raised_at=_raised_at(s))
            self._index(st)
            batch.note(st, RAISED, None if policy is None else f"policy {policy.name}")
            return
        if not _newer(s.stamp, st.stamp):
            return  # this record (or a later one) was applied already: a redelivery
        if s.stamp is None and st.alarm.state == ACTIVE:
            return  # a gateway-level condition reported again: the same episode
        if s.stamp is not None:
            st.stamp = s.stamp
        at = _raised_at(s)
        if at is not None and (st.raised_at is None or compare_record_times(
                *st.raised_at, *at, same_clock=True) < 0):
            st.raised_at = at  # the latest raise: what a later reset is compared with
        st.alarm = dataclasses.replace(st.alarm, state=ACTIVE, cleared_ms=None,
                                       raise_count=st.alarm.raise_count + 1)
        batch.note(st, RE_RAISED, optional=True)

    def _clear(self, st: Stored, batch: _Batch) -> None:
        if st.alarm.state == CLEARED:
            return
        st.alarm = dataclasses.replace(st.alarm, state=CLEARED, cleared_ms=batch.now)
        if not st.alarm.open:
            st.closed_ms = batch.now
        batch.note(st, CLEARED_WHAT, optional=True)

    def _reset(self, s: Signal, batch: _Batch) -> None:
        """The risk colours' rule (collector.risk): the ``reset_clears`` alarms under the
        reset's panel, raised at or before the reset by record time."""
        prefix = reset_prefix(s.source)
        for st in list(self._per_gateway.get(s.gateway, {}).values()):
            a = st.alarm
            if (a.gateway == s.gateway and a.type in self.reset_clears
                    and a.source.startswith(prefix) and _raised_by(st, s, bool(prefix))):
                self._clear(st, batch)

    # -- escalation --------------------------------------------------------------------------

    def _reschedule(self, st: Stored, batch: _Batch | None = None, *,
                    load: bool = False) -> None:
        """Set the alarm's next step time from its state and policy (derived, and stored so
        a restart finds it); a step stopped by a clear says so in the timeline. The timer
        heap gets an entry only when the time changed (or at load): a flapping contact
        re-raised all day does not grow it."""
        before = st.alarm.next_step_ms
        due = due_ms(st.alarm, self._by_name.get(st.alarm.escalation_policy or ""))
        if due != before:
            st.alarm = dataclasses.replace(st.alarm, next_step_ms=due)
            if due is None and batch is not None and not st.alarm.acknowledged:
                batch.note(st, ESCALATION_STOPPED, "cleared")
        if due is not None and (due != before or load):
            if not self._timers or due < self._timers[0][0]:
                self.wake.set()
            heapq.heappush(self._timers, (due, st.alarm.id))

    def fire_due(self, now_ms: int | None = None) -> int | None:
        """Queue every step due by ``now_ms``; returns when the next one is due (None:
        none). Called by the escalation loop (and by tests with their own clock)."""
        now = self._clock() if now_ms is None else now_ms
        with self._lock:
            changes = self._fire(now)
            next_ms = self._next_due()
        self._publish(changes)
        return next_ms

    def _next_due(self) -> int | None:
        while self._timers:
            due, alarm_id = self._timers[0]
            st = self._ids.get(alarm_id)
            if st is not None and st.alarm.next_step_ms == due:
                return due
            heapq.heappop(self._timers)  # stale: the alarm moved on or closed
        return None

    def _fire(self, now: int, batch: _Batch | None = None) -> list[Change]:
        """Queue the steps due by ``now`` (durably), then write that they were, with
        ``batch``'s changes, in one transaction; a crash in between queues them again after
        the restart under the same keys, so each is sent once."""
        due: dict[str, Stored] = {}
        while self._timers and self._timers[0][0] <= now:
            t, alarm_id = heapq.heappop(self._timers)
            st = self._ids.get(alarm_id)
            if st is not None and st.alarm.next_step_ms == t:
                due[alarm_id] = st
        if not due and batch is None:
            return []
        notes: list[Notification] = []
        timeline: list[tuple[str, TimelineEntry]] = [] if batch is None else batch.timeline
        rows: dict[str, Stored] = {} if batch is None else dict(batch.touched)
        after: list[tuple[Stored, Alarm, int]] = []
        for st in due.values():
            a = st.alarm
            policy = self._by_name.get(a.escalation_policy or "")
            if policy is None:
                continue
            n = 0
            while a.next_step_ms is not None and a.next_step_ms <= now:
                step = a.escalation_step + 1
                a = dataclasses.replace(a, escalation_step=step)
                a = dataclasses.replace(a, next_step_ms=due_ms(a, policy))
                notes.append(step_notification(a, policy, step, now, self.ack_url_base))
                hooks = ", ".join(policy.steps[step].webhooks)
                timeline.append((a.id, TimelineEntry(now, NOTIFIED, None,
                                                     f"step {step}: {hooks}")))
                n += 1
            after.append((st, a, n))
            rows[a.id] = st.but(a, st.timeline_n + n, st.closed_ms)
        try:
            if self._notify is not None and notes:
                self._notify(notes)
            if rows:
                self._store.save(rows.values(), timeline)
        except BaseException:
            for st in due.values():  # the steps are due again at the next look
                assert st.alarm.next_step_ms is not None
                heapq.heappush(self._timers, (st.alarm.next_step_ms, st.alarm.id))
            raise
        changes: list[Change] = []
        for st, a, n in after:
            st.timeline_n += n
            st.alarm = a
            if a.next_step_ms is not None:
                heapq.heappush(self._timers, (a.next_step_ms, a.id))
            changes.append(AlarmChange(a, NOTIFIED))
        return changes

    def next_due_ms(self) -> int | None:
        """When the next step of any alarm is due (None: none)."""
        with self._lock:
            return self._next_due()

    # -- people ------------------------------------------------------------------------------

    def acknowledge(self, alarm_id: str, *, by: str, note: str | None, origin: str,
                    now_ms: int | None = None) -> Alarm:
        """``by`` has seen the alarm: its escalation stops. AlarmNotFound; AlarmConflict when
        it was acknowledged already (by whom, when)."""
        _check_text(note)
        now = self._clock() if now_ms is None else now_ms
        with self._lock:
            st = self._find(alarm_id)
            if st.alarm.acknowledged:
                raise AlarmConflict(f"alarm {alarm_id} was acknowledged already by "
                                    f"{st.alarm.acknowledged_by} at {st.alarm.acknowledged_ms}")
            new = self._acked(st.alarm, by, note, now)
            entries = [TimelineEntry(now, ACKNOWLEDGED, by, note)]
            if st.alarm.next_step_ms is not None:
                entries.append(TimelineEntry(now, ESCALATION_STOPPED, by, "acknowledged"))
            audit = AuditEntry(now, by, "acknowledge", alarm_id, origin, note)
            self._commit(st, new, entries, audit, now)
        self._publish([AlarmChange(new, ACKNOWLEDGED)])
        return new

    def resolve(self, alarm_id: str, *, verdict: Verdict, by: str, note: str | None,
                origin: str, now_ms: int | None = None) -> Alarm:
        """Record what the alarm was (``real``, ``false``, ``test``); acknowledges it too if
        nobody had. AlarmNotFound; AlarmConflict when it was resolved already; ValueError for
        another verdict."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        _check_text(note)
        now = self._clock() if now_ms is None else now_ms
        with self._lock:
            st = self._find(alarm_id)
            if st.alarm.resolution is not None:
                raise AlarmConflict(f"alarm {alarm_id} was resolved already ("
                                    f"{st.alarm.resolution}) by {st.alarm.resolved_by} at "
                                    f"{st.alarm.resolved_ms}")
            entries = []
            new = st.alarm
            if not new.acknowledged:
                new = self._acked(new, by, None, now)
                entries.append(TimelineEntry(now, ACKNOWLEDGED, by, "with the resolution"))
                if st.alarm.next_step_ms is not None:
                    entries.append(TimelineEntry(now, ESCALATION_STOPPED, by, "resolved"))
            new = dataclasses.replace(new, resolution=verdict, resolved_by=by, resolved_ms=now,
                                      resolution_note=note)
            entries.append(TimelineEntry(now, RESOLVED, by,
                                         verdict + (f": {note}" if note else "")))
            audit = AuditEntry(now, by, "resolve", alarm_id, origin,
                               verdict + (f": {note}" if note else ""))
            self._commit(st, new, entries, audit, now)
        self._publish([AlarmChange(new, RESOLVED)])
        return new

    @staticmethod
    def _acked(a: Alarm, by: str, note: str | None, now: int) -> Alarm:
        return dataclasses.replace(a, acknowledged=True, acknowledged_by=by,
                                   acknowledged_ms=now, note=note, next_step_ms=None)

    def _find(self, alarm_id: str) -> Stored:
        st = self._ids.get(alarm_id)
        if st is None:
            st = self._store.get(alarm_id)
        if st is None:
            raise AlarmNotFound(f"no alarm {alarm_id!r}")
        return st

    def _commit(self, st: Stored, new: Alarm, entries: list[TimelineEntry],
                audit: AuditEntry, now: int) -> None:
        """Persist a person's action on ``st`` (memory changes only once it is written)."""
        was_open = st.alarm.open
        closed_ms = now if was_open and not new.open else st.closed_ms
        self._store.save([st.but(new, st.timeline_n + len(entries), closed_ms)],
                         [(new.id, e) for e in entries], [audit])
        st.alarm, st.timeline_n, st.closed_ms = new, st.timeline_n + len(entries), closed_ms
        if was_open and not new.open:
            self._unindex(st)

    # -- reads -------------------------------------------------------------------------------

    def get(self, alarm_id: str) -> Alarm | None:
        with self._lock:
            st = self._ids.get(alarm_id)
            if st is not None:
                return st.alarm
            found = self._store.get(alarm_id)
            return None if found is None else found.alarm

    def list(self, *, state: str = "active", site: str | None = None,
             sites: Callable[[str], bool] | None = None, acknowledged: bool | None = None,
             limit: int = 500, before_ms: int | None = None,
             before_id: str | None = None) -> builtins.list[Alarm]:
        """Alarms newest first: ``state`` is ``active``, ``cleared``, ``open`` (not yet
        acknowledged and cleared or resolved), ``closed`` or ``all``; ``site`` one site,
        ``sites`` the user's filter; ``acknowledged`` True / False / None (either).
        ``before_ms``/``before_id``: the page after the alarm raised at ``before_ms`` with
        id ``before_id`` (the last of the previous page); ``before_ms`` alone: alarms raised
        before it.

        Open alarms come from memory, in their kept order, site by site: only the alarms
        returned are looked at past their order key (a user of 10 sites among 200 does not
        pay for the other 190). Closed ones come from the file, with the user's sites (their
        filter run once per site, remembered) in the query."""
        if state not in _STATE_SQL:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        if limit <= 0:
            return []
        after = _after(before_ms, before_id)
        with self._lock:
            scope = self._scope(site, sites)
            out = [] if state == "closed" else self._open_page(state, scope, acknowledged,
                                                                limit, after)
            if state == "open" or scope == ():
                return out
            # A full page from memory: a closed alarm raised before its last can't be in it.
            floor = out[-1].raised_ms if len(out) >= limit else None
            closed = _select(self._store, state, scope, acknowledged, limit, after,
                             closed_only=True, floor_ms=floor)
        if not out:
            return closed
        merged = heapq.merge(out, closed, key=lambda a: (-a.raised_ms, a.id))
        return builtins.list(itertools.islice(merged, limit))

    def _scope(self, site: str | None, sites: Callable[[str], bool] | None) -> Scope:
        """The sites a list may show: ``site`` if the filter lets it, else the book's sites
        the filter lets (remembered per filter until a new site appears), None: all."""
        if site is not None:
            return (site,) if sites is None or sites(site) else ()
        if sites is None:
            return None
        version = len(self._sites)  # sites are only ever added
        try:
            cached = self._scopes.get(sites)
        except TypeError:  # an unhashable filter: not remembered
            return tuple(s for s in self._sites if sites(s))
        if cached is not None and cached[0] == version:
            return cached[1]
        if len(self._scopes) >= SCOPE_CACHE:
            self._scopes.clear()
        scope = tuple(sorted(s for s in self._sites if sites(s)))
        self._scopes[sites] = (version, scope)
        return scope

    def _open_page(self, state: str, scope: Scope, acknowledged: bool | None, limit: int,
                   after: Order | None) -> builtins.list[Alarm]:
        """Up to ``limit`` open alarms in ``scope`` matching ``state`` and ``acknowledged``,
        newest first, after ``after``."""
        if scope is None:
            keys: Iterable[Order] = _from(self._order, after)
        elif len(scope) <= MERGE_SITES:
            keys = heapq.merge(*(_from(self._by_site[s], after) for s in scope
                                 if s in self._by_site))
        else:
            wanted = set(scope)
            keys = (k for k in _from(self._order, after)
                    if self._ids[k[1]].alarm.site in wanted)
        out: builtins.list[Alarm] = []
        for _, alarm_id in keys:
            a = self._ids[alarm_id].alarm
            if ((state == "active" and a.state != ACTIVE)
                    or (state == "cleared" and a.state != CLEARED)
                    or (acknowledged is not None and a.acknowledged != acknowledged)):
                continue
            out.append(a)
            if len(out) >= limit:
                break
        return out

    def timeline(self, alarm_id: str) -> builtins.list[TimelineEntry]:
        """Everything that happened to the alarm, in order ([] for an unknown id)."""
        with self._lock:
            return self._store.timeline(alarm_id)

    def audit(self, *, limit: int = 500, before_ms: int | None = None,
              before_seq: int | None = None, sites: Callable[[str], bool] | None = None
              ) -> builtins.list[AuditEntry]:
        """Who acknowledged or resolved what, newest first; ``sites`` the user's filter,
        applied in the query before ``limit`` (a page is short only at the end); the page
        after ``(before_ms, before_seq)``, the previous page's last entry."""
        with self._lock:
            visible = None if sites is None else [s for s in self._store.sites() if sites(s)]
            return self._store.audit(limit, before_ms, visible, before_seq)

    def open_counts(self) -> dict[str, int]:
        """Open alarms per site."""
        with self._lock:
            return {site: len(keys) for site, keys in self._by_site.items()}

    def open_alarms(self) -> builtins.list[Alarm]:
        """Every open alarm (a copy), oldest first."""
        with self._lock:
            return sorted((st.alarm for st in self._open.values()),
                          key=lambda a: (a.raised_ms, a.id))

    # -- subscribers -------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback`` with every change once it is persisted, on the thread that made
        it (it must not block); returns the function that unsubscribes it."""
        with self._lock:
            self._subscribers = [*self._subscribers, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [c for c in self._subscribers if c is not callback]
        return unsubscribe

    def site_changed(self, site: str, colour: str, reasons: Sequence[str], at_ms: int) -> None:
        """A site's risk colour changed (the writer, once the registry has it)."""
        self._publish([SiteChange(site, colour, tuple(reasons), at_ms)])

    def _publish(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        for callback in self._subscribers:
            for change in changes:
                try:
                    callback(change)
                except Exception:  # a subscriber's fault must not stop the writer
                    log.exception("alarm subscriber %r failed", callback)

    # -- bounds ------------------------------------------------------------------------------

    def prune(self, now_ms: int | None = None) -> int:
        """Forget alarms closed more than ``retention_days`` ago; returns how many."""
        now = self._clock() if now_ms is None else now_ms
        with self._lock:
            n = self._store.prune(now - round(self.config.retention_days * 86_400_000))
        if n:
            log.info("alarms: %d closed alarm(s) past their retention forgotten", n)
        return n

    # -- internals ---------------------------------------------------------------------------

    def _index(self, st: Stored) -> None:
        a = st.alarm
        self._open[a.key] = st
        self._ids[a.id] = st
        gw = a.gateway
        self._per_gateway.setdefault(gw, {})[a.key] = st
        key = (-a.raised_ms, a.id)
        bisect.insort(self._order, key)
        bisect.insort(self._by_site.setdefault(a.site, []), key)
        self._sites.add(a.site)

    def _unindex(self, st: Stored) -> None:
        if self._open.get(st.alarm.key) is st:
            del self._open[st.alarm.key]
            gw = st.alarm.gateway
            own = self._per_gateway[gw]
            del own[st.alarm.key]
            if not own:
                del self._per_gateway[gw]
        if self._ids.pop(st.alarm.id, None) is not None:
            a = st.alarm
            key = (-a.raised_ms, a.id)
            _remove(self._order, key)
            keys = self._by_site[a.site]
            _remove(keys, key)
            if not keys:
                del self._by_site[a.site]

    def _refuse(self, s: Signal, *, folded: bool = False) -> None:
        """A gateway past ``max_open_per_gateway``: counted, logged (the first, then every
        1,000th). ``folded``: a fire alarm past ``max_open_fire_per_gateway``, counted into
        the gateway's overflow alarm."""
        if folded:
            m = self.folded[s.gateway] = self.folded.get(s.gateway, 0) + 1
            if m % 1000 == 1:
                log.error("gateway %s has %d open alarms (max_open_fire_per_gateway): fire "
                          "alarm from %r re-raises its overflow alarm, %d so far",
                          s.gateway, len(self._per_gateway.get(s.gateway, ())), s.source, m)
            return
        n = self.refused[s.gateway] = self.refused.get(s.gateway, 0) + 1
        if n % 1000 == 1:
            log.warning("gateway %s has %d open alarms (max_open_per_gateway): %s from %r "
                        "not opened as an alarm, %d so far (fire alarms always are)",
                        s.gateway, len(self._per_gateway.get(s.gateway, ())), s.type, s.source, n)

    def _new_id(self, s: Signal) -> str:
        """From the raising record when there is one (its redelivery after a crash opens the
        same id), else random; never one the book has."""
        alarm_id = ""
        if s.stamp is not None:
            alarm_id = "a" + hashlib.blake2b(
                f"{s.gateway}\0{s.source}\0{s.type}\0{s.stamp[0]}\0{s.stamp[1]}".encode(),
                digest_size=8).hexdigest()
        while not alarm_id or alarm_id in self._ids or self._store.get(alarm_id) is not None:
            alarm_id = "a" + secrets.token_hex(8)
        return alarm_id


def select_alarms(store: AlarmStore, *, state: str = "active", site: str | None = None,
                  sites: Callable[[str], bool] | None = None, acknowledged: bool | None = None,
                  limit: int = 500, before_ms: int | None = None,
                  before_id: str | None = None) -> list[Alarm]:
    """:meth:`AlarmBook.list` on a store (the command line reads a running collector's file
    with it)."""
    if state not in _STATE_SQL:
        raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    if limit <= 0:
        return []
    scope: Scope = None
    if site is not None:
        scope = (site,) if sites is None or sites(site) else ()
    elif sites is not None:
        scope = tuple(s for s in store.sites() if sites(s))
    if scope == ():
        return []
    return _select(store, state, scope, acknowledged, limit, _after(before_ms, before_id))


def _select(store: AlarmStore, state: str, scope: Scope, acknowledged: bool | None, limit: int,
            after: Order | None, *, closed_only: bool = False,
            floor_ms: int | None = None) -> list[Alarm]:
    """The file's alarms matching, newest first, at most ``limit``: the sites, the cursor and
    the limit are in the query (SQL from fixed fragments, values as parameters)."""
    where, args = [_STATE_SQL[state]], list[object]()
    # A few sites' closed history: a lazy query per site, merged (not for "active": the
    # closed active alarms are few, alarm_closed_state finds them at once).
    by_site = (closed_only and scope is not None and len(scope) <= MERGE_SITES
               and state != "active")
    if closed_only and not by_site:
        where.append("open = 0")
    if scope is not None and not by_site:
        where.append("site IN (SELECT value FROM json_each(?))")  # any number of sites
        args.append(json.dumps(scope))
    if acknowledged is not None:
        where.append("acknowledged = ?")
        args.append(int(acknowledged))
    if floor_ms is not None:
        where.append("raised_ms >= ?")
        args.append(floor_ms)
    if after is not None:
        # "raised_ms <= ?" first: a range on the index, so a deep page does not scan the
        # newer rows.
        where.append("raised_ms <= ? AND (raised_ms < ? OR id > ?)")
        args += [-after[0], -after[0], after[1]]
    if by_site:
        assert scope is not None
        return store.select_closed_by_site(" AND ".join(where), args, scope, limit)
    return list(store.select(" AND ".join(where), args, limit))


def _after(before_ms: int | None, before_id: str | None) -> Order | None:
    """The order key a page starts after (exclusive); None: from the newest."""
    if before_ms is None:
        if before_id is not None:
            raise ValueError("before_id needs before_ms")
        return None
    # Without an id: every alarm raised at before_ms is excluded too (U+10FFFF sorts after
    # every id, in Python and in SQLite's byte order alike).
    return (-before_ms, "\U0010ffff" if before_id is None else before_id)


def _from(keys: list[Order], after: Order | None) -> Iterator[Order]:
    """``keys`` (sorted) from the first one past ``after``, read lazily."""
    start = 0 if after is None else bisect.bisect_right(keys, after)
    return (keys[i] for i in range(start, len(keys)))


def _remove(keys: list[Order], key: Order) -> None:
    i = bisect.bisect_left(keys, key)
    if i < len(keys) and keys[i] == key:
        del keys[i]


class _Batch:
    """What one :meth:`AlarmBook.apply` changed: the alarms, their new timeline entries, and
    the last thing that happened to each (what subscribers are told)."""

    def __init__(self, now: int, max_timeline: int) -> None:
        self.now = now
        self.max_timeline = max_timeline
        self.touched: dict[str, Stored] = {}
        self.what: dict[str, str] = {}
        self.timeline: list[tuple[str, TimelineEntry]] = []

    def note(self, st: Stored, what: str, detail: str | None = None, *,
             optional: bool = False) -> None:
        """Record ``what`` (an optional entry only while the alarm's timeline has room: a
        flapping contact is counted in ``raise_count``, not written a million times)."""
        self.touched[st.alarm.id] = st
        self.what[st.alarm.id] = what
        if optional and st.timeline_n >= self.max_timeline:
            return
        st.timeline_n += 1
        self.timeline.append((st.alarm.id, TimelineEntry(self.now, what, None, detail)))


def _check_text(note: str | None) -> None:
    if note is not None and len(note) > MAX_TEXT:
        raise ValueError(f"a note is at most {MAX_TEXT} characters, got {len(note)}")
