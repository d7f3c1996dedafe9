"""Webhook notifications: fire alarms, faults, threshold alarms and gateway-offline, at once.

A notification is queued **durably** (SQLite, ``synchronous=FULL``) by the pipeline before the
MQTT message that carried its record is acknowledged, so neither a crash nor a restart loses
one. Each ``[[webhook]]`` has its own sender thread (a receiver that hangs cannot delay the
others) which POSTs the queue in order:

* body: one JSON object (:func:`event_body`, :func:`gateway_body`), UTF-8;
* ``X-Firegate-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes with the
  webhook's secret (the receiver recomputes it and compares in constant time);
* ``X-Firegate-Delivery``: the de-duplication key (``event:<gw>:<seq>`` or
  ``offline:<gw>:<episode>``), ``X-Firegate-Event``: the kind;
* a 2xx answer is delivered; a network error, a timeout, 408, 429 or 5xx is retried with
  exponential back-off (``Retry-After`` honoured) while later ones wait, so a "cleared" never
  overtakes its "raised"; any other 4xx is refused for good (counted, the queue moves on);
  after ``give_up_after_s`` a notification is dropped as failed (counted).

A key is queued at most once per webhook (``UNIQUE(webhook, key)``): a redelivered MQTT
message or a second report of the same offline episode is sent once. Sent keys are kept
for a week.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from collector.config import WebhookConfig
from collector.metrics import Metrics
from protocols.wire import Event

__all__ = ["Notification", "Notifier", "event_body", "gateway_body", "sign"]

KEEP_SENT_MS = 7 * 86_400_000
USER_AGENT = "firegate-collector"
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
    UNIQUE (webhook, key)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (webhook, state, id);
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def sign(secret: str, body: bytes) -> str:
    """The ``X-Firegate-Signature`` header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


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
                 reason: str | None) -> bytes:
    """The JSON body of ``gateway_offline`` / ``gateway_online``."""
    return _dumps({"v": 1, "kind": kind, "active": kind == "gateway_offline", "key": key,
                   "gateway": gateway_id, "site": site, "time_ms": time_ms, "reason": reason})


class _Row(NamedTuple):
    id: int
    key: str
    kind: str
    body: bytes
    created_ms: int
    attempts: int
    next_ms: int


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is misconfigured: urllib would turn the POST into a GET
    without body, so a 3xx is reported (refused) instead of followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass(frozen=True, slots=True)
class Notification:
    kind: str
    """An event type value, ``gateway_offline`` or ``gateway_online``."""
    key: str
    body: bytes
    active: bool = True


class Notifier:
    """The durable queue and one sender thread per webhook."""

    def __init__(self, path: Path, webhooks: Sequence[WebhookConfig], metrics: Metrics,
                 *, clock: Callable[[], int] = _now_ms) -> None:
        self.webhooks = tuple(webhooks)
        self.metrics = metrics
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a queued fire alarm survives power loss
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = {w.name: threading.Event() for w in self.webhooks}
        self._threads = [threading.Thread(target=self._run, args=(w,), name=f"webhook-{w.name}",
                                          daemon=True) for w in self.webhooks]
        self._prune()

    def wants(self, kind: str, active: bool) -> bool:
        """Whether any webhook takes this kind (so the pipeline skips building bodies)."""
        return any(kind in w.events and (active or w.restores) for w in self.webhooks)

    def enqueue(self, items: Sequence[Notification]) -> int:
        """Queue ``items`` for every webhook whose filter takes them; durable on return.
        Returns the number of new deliveries (keys already queued are ignored)."""
        now = self._clock()
        rows = [(w.name, n.key, n.kind, n.body, now, now) for n in items for w in self.webhooks
                if n.kind in w.events and (n.active or w.restores)]
        if not rows:
            return 0
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO outbox (webhook, key, kind, body, created_ms, next_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
            added = self._db.total_changes - before
        for name in {r[0] for r in rows}:
            self._wake[name].set()
        return added

    def pending(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM outbox WHERE state = 'pending'")
            return int(row.fetchone()[0])

    def counts(self) -> dict[str, dict[str, int]]:
        """Per webhook: rows by state (pending, sent, failed)."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for name, state, n in self._db.execute(
                    "SELECT webhook, state, count(*) FROM outbox GROUP BY webhook, state"):
                out.setdefault(name, {})[state] = n
        return out

    def start(self) -> Notifier:
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for e in self._wake.values():
            e.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=10)
        with self._lock:
            self._db.close()

    # -- sender ------------------------------------------------------------------------------

    def _prune(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE state != 'pending' AND done_ms < ?",
                             (self._clock() - KEEP_SENT_MS,))

    def _next(self, hook: WebhookConfig) -> _Row | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, key, kind, body, created_ms, attempts, next_ms FROM outbox "
                "WHERE webhook = ? AND state = 'pending' ORDER BY id LIMIT 1", (hook.name,),
            ).fetchone()
        return None if row is None else _Row(*row)

    def _run(self, hook: WebhookConfig) -> None:
        wake = self._wake[hook.name]
        while not self._stop.is_set():
            row = self._next(hook)
            if row is None:
                wake.wait(timeout=5.0)
                wake.clear()
                continue
            row_id, key, kind, body, created_ms, attempts, next_ms = row
            delay = (next_ms - self._clock()) / 1000
            if delay > 0:
                wake.wait(timeout=min(delay, 5.0))
                wake.clear()
                continue
            outcome, error, retry_after = self._post(hook, key, kind, body)
            now = self._clock()
            self.metrics.notifications.inc(hook.name, outcome)
            with self._lock:
                if outcome == "sent":
                    self._db.execute("UPDATE outbox SET state='sent', attempts=?, done_ms=?, "
                                     "last_error=NULL WHERE id=?", (attempts + 1, now, row_id))
                elif outcome == "refused" or now - created_ms > hook.give_up_after_s * 1000:
                    self._db.execute("UPDATE outbox SET state='failed', attempts=?, done_ms=?, "
                                     "last_error=? WHERE id=?", (attempts + 1, now, error,
                                                                 row_id))
                    if outcome != "refused":
                        self.metrics.notifications.inc(hook.name, "gave_up")
                else:
                    backoff = min(hook.retry_max_s, hook.retry_min_s * 2 ** min(attempts, 30))
                    if retry_after is not None:
                        backoff = min(max(backoff, retry_after), hook.retry_max_s)
                    self._db.execute("UPDATE outbox SET attempts=?, next_ms=?, last_error=? "
                                     "WHERE id=?", (attempts + 1, now + int(backoff * 1000),
                                                    error, row_id))

    def _post(self, hook: WebhookConfig, key: str, kind: str, body: bytes
              ) -> tuple[str, str | None, float | None]:
        """One POST: ("sent" | "retry" | "refused", error text, Retry-After seconds)."""
        request = urllib.request.Request(hook.url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "X-Firegate-Event": kind,
            "X-Firegate-Delivery": key,
            "X-Firegate-Signature": sign(hook.secret, body),
        })
        try:
            with _OPENER.open(request, timeout=hook.timeout_s) as response:
                response.read()
                return "sent", None, None
        except urllib.error.HTTPError as e:
            retry_after = _retry_after(e.headers.get("Retry-After"))
            e.close()
            if e.code in (408, 429) or e.code >= 500:
                return "retry", f"HTTP {e.code}", retry_after
            return "refused", f"HTTP {e.code}", None
        except (OSError, ValueError) as e:  # URLError, timeouts, connection refused/reset
            return "retry", f"{type(e).__name__}: {e}"[:200], None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from webhook receivers; the back-off applies
