"""Webhook notifications: fire alarms, faults, threshold alarms and gateway-offline, at once.

A notification is queued **durably** (SQLite, ``synchronous=FULL``) by the pipeline before the
MQTT message that carried its record is acknowledged, so neither a crash nor a restart loses
one. The request itself (signature, deadline, bounded answer) is :mod:`collector.webhook`;
this module is the queue and its senders:

* **Two lanes per webhook**, each its own thread: ``fire`` (``fire_alarm`` raised and
  cleared) and ``other`` (the rest). A fire alarm never waits behind another class: a
  receiver that refuses or hangs on faults delays only the ``other`` lane (issue 14).
* **Order per source**, not per webhook: notifications with the same order key (the gateway
  and source of an event, the gateway of an offline/online transition) go in the order
  queued, so a "cleared" never overtakes its "raised"; only the oldest pending row of an
  order key is eligible, and a lane sends the oldest *due* one of those heads, so one refused
  source does not hold the others.
* **Retries**: a network error, the deadline, a malformed answer, 408, 429 or 5xx is retried
  with exponential back-off (``Retry-After`` honoured); any other status is refused for good.
  A row is failed without a last POST once it is older than ``give_up_after_s`` (counted
  ``gave_up``) and after ``max_attempts`` attempts (``exhausted``).
* **Senders that do not die**: every exception in a lane is caught, counted
  (``webhook_errors_total``), logged once with its traceback and retried after a short
  pause; a watchdog restarts a lane thread that died anyway (``webhook_sender_restarts``).
  Each lane beats at least every :data:`MAX_WAIT_S`; :meth:`Notifier.status` and the
  ``webhook_sender_up`` gauge say whether it does.

A key is queued at most once per webhook (``UNIQUE(webhook, key)``): a redelivered MQTT
message or a second report of the same offline episode is sent once. Sent keys are kept
for a week.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from collector.config import WebhookConfig
from collector.metrics import Metrics
from collector.webhook import Attempt, error_text, post, sign
from common.backoff import Backoff
from common.files import private_file
from protocols.wire import Event

__all__ = ["FIRE_KINDS", "LANES", "Notification", "Notifier", "event_body", "gateway_body",
           "lane_of", "order_key", "sign"]

log = logging.getLogger("firegate.collector.notify")

KEEP_SENT_MS = 7 * 86_400_000
PRUNE_EVERY_S = 3600.0
"""How often the watchdog forgets sent and failed rows older than ``KEEP_SENT_MS``."""
FIRE, OTHER = "fire", "other"
LANES: tuple[str, ...] = (FIRE, OTHER)
FIRE_KINDS = frozenset({"fire_alarm"})
"""Kinds sent on the ``fire`` lane (raised and cleared alike, so they stay in order)."""
MAX_WAIT_S = 2.0
"""A lane looks at its queue, and beats, at least this often."""
FAULT_PAUSE_MIN_S, FAULT_PAUSE_MAX_S = 0.5, 10.0
HEADS_PER_STEP = 50
"""A lane takes up to this many due heads (each of its own order key) per look at its queue and
marks those delivered in one transaction: a burst (1,000 escalation steps due at once) is not
held to one fsync per POST. A crash in between sends those again (same delivery key)."""
"""The pause after an unexpected exception in a lane, doubling while it repeats."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    webhook TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    done_ms INTEGER,
    order_key TEXT NOT NULL DEFAULT '',
    lane TEXT NOT NULL DEFAULT 'other',
    UNIQUE (webhook, key)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (webhook, state, id);
"""
HEADS_INDEX = ("CREATE INDEX IF NOT EXISTS outbox_heads "
               "ON outbox (webhook, lane, state, order_key, id)")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def lane_of(kind: str) -> str:
    """The lane a notification of ``kind`` is sent on."""
    return FIRE if kind in FIRE_KINDS else OTHER


def order_key(gateway: str | None, source: str | None, key: str) -> str:
    """What a notification is ordered with: ``<gateway>/<source>`` for an event, the gateway
    for a gateway transition, its own ``key`` (nothing) without a gateway. Gateway ids hold no
    ``/`` and keys hold ``:``, so the three never collide."""
    if gateway is None:
        return key
    return gateway if source is None else f"{gateway}/{source}"


def _dumps(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def event_body(gateway_id: str, site: str | None, event: Event, *,
               colour: str | None = None) -> bytes:
    """The JSON body for an event record (deterministic: the same record gives the same bytes)."""
    src = event.source
    source: dict[str, object] = {"id": src.id, "bus": src.bus.value}
    if src.description is not None:
        source["desc"] = src.description
    body: dict[str, object] = {
        "v": 1, "kind": event.type.value, "active": event.active,
        "key": f"event:{gateway_id}:{event.seq}", "gateway": gateway_id, "site": site,
        "seq": event.seq, "priority": event.priority.value, "time_ms": event.receive_ms,
        "source_ms": event.source_ms, "source": source,
    }
    for name, value in (("value", event.value), ("limit", event.limit),
                        ("detail", event.detail), ("state", event.state)):
        if value is not None:
            body[name] = value
    if colour is not None:
        body["risk"] = colour
    return _dumps(body)


def gateway_body(gateway_id: str, site: str | None, kind: str, key: str, time_ms: int,
                 reason: str | None, *, active: bool | None = None) -> bytes:
    """The JSON body of a gateway-level notification: ``gateway_offline`` /
    ``gateway_online``, ``records_missing`` (raised, or cleared with ``active=False``)."""
    return _dumps({"v": 1, "kind": kind,
                   "active": kind == "gateway_offline" if active is None else active,
                   "key": key, "gateway": gateway_id, "site": site, "time_ms": time_ms,
                   "reason": reason})


@dataclass(frozen=True, slots=True)
class Notification:
    """One thing to tell every webhook that takes its kind (built by the writer)."""

    kind: str
    """An event type value, ``gateway_offline`` or ``gateway_online``."""
    key: str
    """The de-duplication key (``X-Firegate-Delivery``)."""
    body: bytes
    active: bool = True
    gateway: str | None = None
    """Who it is about: with ``source``, what it is ordered with (:func:`order_key`)."""
    source: str | None = None
    """The event's source id; None for a gateway transition."""
    webhooks: tuple[str, ...] | None = None
    """Addressed: only these webhooks take it, whatever their ``events`` (an alarm's
    escalation step, collector/alarms); None: every webhook whose filter takes ``kind``."""
    fire: bool = False
    """On the fire lane whatever ``kind`` is (the escalation of a fire alarm)."""

    @property
    def lane(self) -> str:
        return FIRE if self.fire else lane_of(self.kind)

    def for_webhook(self, hook: WebhookConfig) -> bool:
        """Whether ``hook`` takes this notification."""
        if self.webhooks is not None:
            return hook.name in self.webhooks
        return self.kind in hook.events and (self.active or hook.restores)

    @property
    def order_key(self) -> str:
        return order_key(self.gateway, self.source, self.key)


class _Row(NamedTuple):
    id: int
    key: str
    kind: str
    body: bytes
    created_ms: int
    attempts: int
    next_ms: int
    last_error: str | None


class _Lane:
    """One sender thread of one webhook, and what says it is alive."""

    def __init__(self, hook: WebhookConfig, name: str) -> None:
        self.hook = hook
        self.name = name
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.beat = time.monotonic()
        self.restarts = 0
        self.last_fault: str | None = None
        """The last unexpected exception (each distinct one is logged once)."""
        self.failing: str | None = None
        """The delivery error of the current streak of retries (logged when it changes)."""
        # A POST holds the lane up to timeout_s, a fault pause up to FAULT_PAUSE_MAX_S.
        self.stall_s = hook.timeout_s + FAULT_PAUSE_MAX_S + MAX_WAIT_S + 5.0

    def alive(self, now: float) -> bool:
        return self.thread is not None and self.thread.is_alive() and \
            now - self.beat < self.stall_s


class Notifier:
    """The durable queue, two sender threads (lanes) per webhook, and their watchdog."""

    def __init__(self, path: Path, webhooks: Sequence[WebhookConfig], metrics: Metrics,
                 *, clock: Callable[[], int] = _now_ms, watchdog_s: float | None = 1.0) -> None:
        self.webhooks = tuple(webhooks)
        self.metrics = metrics
        self._clock = clock
        private_file(path)  # queued webhook bodies (and what they carry): owner only
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a queued fire alarm survives power loss
        self._db.executescript(SCHEMA)
        _migrate(self._db)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lanes = {(w.name, lane): _Lane(w, lane) for w in self.webhooks for lane in LANES}
        self._last_error: dict[str, tuple[str, int]] = {}
        self._supervising = threading.Lock()
        self._started = False
        self._watchdog_s = watchdog_s
        self._watchdog: threading.Thread | None = None
        self._final_counts: dict[str, dict[str, int]] | None = None
        self._prune()

    def wants(self, kind: str, active: bool) -> bool:
        """Whether any webhook takes this kind (so the pipeline skips building bodies)."""
        return any(kind in w.events and (active or w.restores) for w in self.webhooks)

    def enqueue(self, items: Sequence[Notification]) -> int:
        """Queue ``items`` for every webhook whose filter takes them; durable on return.
        Returns the number of new deliveries (keys already queued are ignored)."""
        now = self._clock()
        rows = [(w.name, n.key, n.kind, n.body, now, now, n.order_key, n.lane)
                for n in items for w in self.webhooks if n.for_webhook(w)]
        if not rows:
            return 0
        with self._lock:
            before = self._db.total_changes
            with _transaction(self._db):
                self._db.executemany(
                    "INSERT OR IGNORE INTO outbox (webhook, key, kind, body, created_ms, "
                    "next_ms, order_key, lane) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            added = self._db.total_changes - before
        for name, lane in {(r[0], r[7]) for r in rows}:
            self._lanes[name, lane].wake.set()
        return added

    def pending(self) -> int:
        return sum(c.get("pending", 0) for c in self.counts().values())

    def counts(self) -> dict[str, dict[str, int]]:
        """Per webhook: rows by state (pending, sent, failed); the last ones after close."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            if self._final_counts is not None:
                return self._final_counts
            for name, state, n in self._db.execute(
                    "SELECT webhook, state, count(*) FROM outbox GROUP BY webhook, state"):
                out.setdefault(name, {})[state] = n
        return out

    def status(self) -> dict[str, dict[str, Any]]:
        """Per webhook: its lanes (alive, restarts, seconds since the last beat), rows by
        state, unexpected errors, the last error and when (the status snapshot's part)."""
        counts = self.counts()
        now = time.monotonic()
        out: dict[str, dict[str, Any]] = {}
        for hook in self.webhooks:
            c = counts.get(hook.name, {})
            error, error_ms = self._last_error.get(hook.name, (None, None))
            lanes = {name: self._lanes[hook.name, name] for name in LANES}
            out[hook.name] = {
                "lanes": {name: {"alive": lane.alive(now), "restarts": lane.restarts,
                                 "idle_s": round(now - lane.beat, 1)}
                          for name, lane in lanes.items()},
                "pending": c.get("pending", 0), "sent": c.get("sent", 0),
                "failed": c.get("failed", 0),
                "errors": int(self.metrics.webhook_errors.value(hook.name)),
                "last_error": error, "last_error_ms": error_ms,
            }
        self._gauge(now)
        return out

    def start(self) -> Notifier:
        with self._supervising:
            self._started = True
            for lane in self._lanes.values():
                self._spawn(lane)
            if self._watchdog_s is not None:
                self._watchdog = threading.Thread(target=self._watch, name="webhook-watchdog",
                                                  daemon=True)
                self._watchdog.start()
        self._gauge(time.monotonic())
        return self

    def supervise(self) -> int:
        """Restart every lane thread that died (none should: each catches every exception;
        this is the net under that net) and refresh the ``webhook_sender_up`` gauge. Called
        by the watchdog thread every ``watchdog_s``; returns how many were restarted."""
        restarted = 0
        with self._supervising:
            if self._started and not self._stop.is_set():
                for lane in self._lanes.values():
                    if lane.thread is not None and not lane.thread.is_alive():
                        log.error("webhook %s: the %s sender thread died; restarted",
                                  lane.hook.name, lane.name)
                        lane.restarts += 1
                        self.metrics.webhook_restarts.inc(lane.hook.name, lane.name)
                        self._spawn(lane)
                        restarted += 1
        self._gauge(time.monotonic())
        return restarted

    def close(self) -> None:
        self._stop.set()
        for lane in self._lanes.values():
            lane.wake.set()
        threads = [(lane.thread, lane.hook.timeout_s + 5.0) for lane in self._lanes.values()]
        for t, timeout in [*threads, (self._watchdog, 5.0)]:
            if t is not None and t.is_alive():
                t.join(timeout=timeout)
        final = self.counts()
        with self._lock:
            self._final_counts = final
            self._db.close()
        self._gauge(time.monotonic())

    # -- lanes -------------------------------------------------------------------------------

    def _spawn(self, lane: _Lane) -> None:
        lane.beat = time.monotonic()
        lane.thread = threading.Thread(target=self._run, args=(lane,), daemon=True,
                                       name=f"webhook-{lane.hook.name}-{lane.name}")
        lane.thread.start()

    def _gauge(self, now: float) -> None:
        self.metrics.webhook_sender_up.replace(
            {(w, name): 1.0 if lane.alive(now) else 0.0 for (w, name), lane in
             self._lanes.items()})

    def _watch(self) -> None:
        assert self._watchdog_s is not None
        pruned = time.monotonic()
        while not self._stop.wait(self._watchdog_s):
            try:
                self.supervise()
                if time.monotonic() - pruned >= PRUNE_EVERY_S:  # the queue keeps its bound
                    pruned = time.monotonic()
                    self._prune()
            except Exception:
                log.exception("webhook watchdog")

    def _run(self, lane: _Lane) -> None:
        pause = Backoff(FAULT_PAUSE_MIN_S, FAULT_PAUSE_MAX_S)
        while not self._stop.is_set():
            lane.beat = time.monotonic()
            try:
                wait = self._step(lane)
            except Exception as e:  # the lane outlives any fault (issue 14): counted, logged
                self._fault(lane, e)
                self._stop.wait(pause.next())  # not the wake event: enqueues must not spin it
                continue
            pause.reset()
            if wait > 0:
                lane.wake.wait(min(wait, MAX_WAIT_S))
                lane.wake.clear()  # the queue is read again after this, so no wake is lost

    def _fault(self, lane: _Lane, e: Exception) -> None:
        name = lane.hook.name
        self.metrics.webhook_errors.inc(name)
        text = error_text(e)
        self._last_error[name] = (text, self._clock())
        if text != lane.last_fault:
            lane.last_fault = text
            log.error("webhook %s (%s lane): unexpected error, counted and retried "
                      "(repeats are not logged)", name, lane.name, exc_info=e)

    def _heads(self, lane: _Lane, now: int) -> list[_Row]:
        """The lane's order keys' heads, the due ones first, oldest first, then by when they
        are due; at most :data:`HEADS_PER_STEP`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT o.id, o.key, o.kind, o.body, o.created_ms, o.attempts, o.next_ms, "
                "o.last_error FROM (SELECT min(id) AS id FROM outbox WHERE webhook = ? AND "
                "lane = ? AND state = 'pending' GROUP BY order_key) AS h "
                "JOIN outbox AS o ON o.id = h.id "
                "ORDER BY o.next_ms > ?, CASE WHEN o.next_ms > ? THEN o.next_ms ELSE o.id END "
                "LIMIT ?", (lane.hook.name, lane.name, now, now, HEADS_PER_STEP)).fetchall()
        return [_Row(*row) for row in rows]

    def _step(self, lane: _Lane) -> float:
        """Handle the lane's due heads; returns how long to wait before the next step."""
        now = self._clock()
        rows = self._heads(lane, now)
        if not rows:
            return MAX_WAIT_S
        if rows[0].next_ms > now:
            return (rows[0].next_ms - now) / 1000
        sent: list[tuple[int, int, int]] = []
        try:
            for row in rows:
                if row.next_ms > now or self._stop.is_set():
                    break
                lane.beat = time.monotonic()
                self._send(lane, row, sent)
        finally:  # what was delivered is marked so, whatever happened after it
            if sent:
                with self._lock, _transaction(self._db):
                    self._db.executemany("UPDATE outbox SET state='sent', attempts=?, "
                                         "done_ms=?, last_error=NULL WHERE id=?", sent)
        return 0.0

    def _send(self, lane: _Lane, row: _Row, sent: list[tuple[int, int, int]]) -> None:
        """One due row: failed if too old or tried too often, else POSTed; a delivery is
        added to ``sent`` (marked by the caller), the rest written at once."""
        hook = lane.hook
        now = self._clock()
        give_up_ms = int(hook.give_up_after_s * 1000)
        if now - row.created_ms >= give_up_ms:
            self._fail(lane, row, row.attempts, "gave_up",
                       f"not delivered within give_up_after_s ({hook.give_up_after_s:g} s)"
                       + (f"; last error: {row.last_error}" if row.last_error else ""))
            return
        if row.attempts >= hook.max_attempts:
            self._fail(lane, row, row.attempts, "exhausted",
                       f"max_attempts ({hook.max_attempts}) reached"
                       + (f"; last error: {row.last_error}" if row.last_error else ""))
            return
        attempt = self._attempt(lane, row)
        now = self._clock()
        attempts = row.attempts + 1
        self.metrics.notifications.inc(hook.name, attempt.outcome)
        if attempt.outcome == "sent":
            sent.append((attempts, now, row.id))
            if lane.failing is not None:
                log.info("webhook %s (%s lane): delivering again", hook.name, lane.name)
                lane.failing = None
        elif attempt.outcome == "refused":
            self._fail(lane, row, attempts, None, attempt.error or "refused")
        elif attempts >= hook.max_attempts:
            self._fail(lane, row, attempts, "exhausted",
                       f"max_attempts ({hook.max_attempts}) reached; last error: "
                       f"{attempt.error}")
        else:
            error = attempt.error or "retry"
            self._last_error[hook.name] = (error, now)
            backoff = min(hook.retry_max_s, hook.retry_min_s * 2 ** min(row.attempts, 30))
            if attempt.retry_after is not None:
                backoff = min(max(backoff, attempt.retry_after), hook.retry_max_s)
            # Never past the give-up time: the row is then failed there, without a last POST.
            next_ms = min(now + int(backoff * 1000), row.created_ms + give_up_ms)
            self._write("UPDATE outbox SET attempts=?, next_ms=?, last_error=? WHERE id=?",
                        (attempts, next_ms, error, row.id))
            if error != lane.failing:
                lane.failing = error
                log.warning("webhook %s (%s lane): %s not delivered (%s); retrying with "
                            "back-off (repeats are not logged)", hook.name, lane.name, row.key,
                            error)

    def _attempt(self, lane: _Lane, row: _Row) -> Attempt:
        """One POST of ``row``. An exception (a fault of ours or of the stored row, never the
        receiver's: :func:`post` returns those) is counted and makes this attempt a retry, so
        the row backs off and is capped like any other instead of holding the lane."""
        hook = lane.hook
        try:
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "X-Firegate-Event": row.kind,
                "X-Firegate-Delivery": row.key,
                "X-Firegate-Signature": sign(hook.secret, row.body),
            }
            return post(hook.url, row.body, headers, hook.timeout_s)
        except Exception as e:
            self._fault(lane, e)
            return Attempt("retry", error_text(e))

    def _fail(self, lane: _Lane, row: _Row, attempts: int, result: str | None,
              error: str) -> None:
        """Mark ``row`` failed; ``result`` is counted (None: the attempt's own result was)."""
        now = self._clock()
        self._write("UPDATE outbox SET state='failed', attempts=?, done_ms=?, last_error=? "
                    "WHERE id=?", (attempts, now, error, row.id))
        if result is not None:
            self.metrics.notifications.inc(lane.hook.name, result)
        self._last_error[lane.hook.name] = (f"{row.key}: {error}", now)
        log.warning("webhook %s: %s failed for good after %d attempts: %s", lane.hook.name,
                    row.key, attempts, error)

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _prune(self) -> int:
        """Forget delivered and failed notifications older than a week (at start, then
        hourly): the queue holds what is pending plus a week of history, not everything
        ever sent. Returns how many rows went."""
        with self._lock:
            before = self._db.total_changes
            self._db.execute("DELETE FROM outbox WHERE state != 'pending' AND done_ms < ?",
                             (self._clock() - KEEP_SENT_MS,))
            return self._db.total_changes - before


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction, rolled back if anything in it fails: a failed insert (a full disk)
    must not leave the connection inside an open transaction, where every later enqueue would
    fail with "cannot start a transaction within a transaction"."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate(db: sqlite3.Connection) -> None:
    """Give an ``outbox`` of an earlier version its order key and lane columns; its pending
    rows get theirs from their bodies (gateway and source), the same rule as new rows."""
    columns = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
    db.execute("BEGIN IMMEDIATE")
    try:
        if "order_key" not in columns:
            db.execute("ALTER TABLE outbox ADD COLUMN order_key TEXT NOT NULL DEFAULT ''")
        if "lane" not in columns:
            db.execute("ALTER TABLE outbox ADD COLUMN lane TEXT NOT NULL DEFAULT 'other'")
        rows = db.execute("SELECT id, key, kind, body FROM outbox WHERE order_key = ''")
        db.executemany("UPDATE outbox SET order_key = ?, lane = ? WHERE id = ?",
                       [(_stored_order(key, bytes(body)), lane_of(kind), row_id)
                        for row_id, key, kind, body in rows.fetchall()])
        db.execute(HEADS_INDEX)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _stored_order(key: str, body: bytes) -> str:
    try:
        doc = json.loads(body)
        source = doc.get("source")
        return order_key(doc.get("gateway"), source.get("id") if source else None, key)
    except (ValueError, AttributeError, TypeError):
        return key
