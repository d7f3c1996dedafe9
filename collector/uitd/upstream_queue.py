"""The durable queue of uploads to higher centres (``[[gb26875.upstream]]``), and the address
book that gives every forwarded source its place in the centre's addressing.

One SQLite file in the state directory (``upstream.sqlite``, WAL, ``synchronous=FULL``: a
queued fire alarm survives ``kill -9`` and power loss). The writer thread fills it
(:meth:`UpstreamQueue.enqueue`, before the message that carried the records is acknowledged);
one forwarder thread per upstream takes from it (collector/uitd/upstream.py). A lock keeps the
one connection to one thread at a time.

* **Once per record**: a row's key is ``<gateway>:<epoch>:<seq>`` (``UNIQUE(upstream, key)``),
  so a message redelivered after a crash enqueues nothing new. Confirmed and evicted rows keep
  their key (without their bytes) for :data:`KEEP_DONE_MS`.
* **Order per target**: a component's (or system's) rows go in the order queued: only the
  oldest pending row of a target may be sent, so an older word never overtakes a newer one
  (the centre diffs words). Among those heads fire alarms go first (GB 26875.1 4.1.2.3), then
  by priority and age.
* **Bounded**: at most ``queue_max`` pending rows and ``queue_max * ROW_BYTES_MAX`` bytes per
  upstream. Past either, the oldest row of the lowest class is evicted: a fire alarm only when
  nothing else is left. A row older than ``queue_max_age_s`` expires. Both are counted
  (:attr:`UpstreamQueue.counts`) and logged.
* **Words**: the conditions raised on each target are kept with its address, and changed in
  the transaction that queues the upload (protocols/upward_records.py builds the word).
"""

from __future__ import annotations

import fnmatch
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import NamedTuple

from collector.alarms.store import private_file
from collector.metrics import Metrics
from collector.uitd.config import UpstreamConfig
from protocols.gb26875 import EncodeError, encode_adu
from protocols.upward_records import (
    GENERIC,
    Target,
    Upload,
    preferred_target,
    system_config,
    upload,
)
from protocols.wire import Event

__all__ = ["FILE_NAME", "GENERIC_BASE", "KEEP_DONE_MS", "MAX_TARGETS", "OWN_TARGET",
           "ROW_BYTES_MAX", "Offer", "Row", "UpstreamQueue"]

log = logging.getLogger("firegate.collector.upstream")

FILE_NAME = "upstream.sqlite"
KEEP_DONE_MS = 86_400_000
"""Keys of confirmed and evicted rows are kept a day: long enough for any redelivery."""
MAX_DONE_ROWS = 200_000
"""... and at most this many per upstream (the oldest forgotten first)."""
OWN_TARGET = "uitd"
"""The target of the UITD's own uploads (a component's is ``c:...``, a system's ``s:...``)."""
ROW_BYTES_MAX = 1024
"""An ADU is at most 1024 bytes (表1): ``queue_max`` rows bound the bytes too."""
GENERIC_BASE = 0x8000_0000
"""Component addresses allocated to sources without panel addressing, or whose panel
address another gateway took first, count up from here (the standard leaves 部件地址's
structure to the facility, §8.2.1.2)."""
MAX_TARGETS = 200_000
"""Sources one upstream gives an address to; past it new sources are not forwarded
(counted ``no_address``)."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY,
    upstream TEXT NOT NULL,
    key TEXT NOT NULL,
    target TEXT NOT NULL,
    priority INTEGER NOT NULL,
    kind TEXT NOT NULL,
    active INTEGER NOT NULL,
    adu BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    done_ms INTEGER,
    UNIQUE (upstream, key)
);
CREATE INDEX IF NOT EXISTS queue_next ON queue (upstream, state, priority, id);
CREATE INDEX IF NOT EXISTS queue_target ON queue (upstream, target, state, id);
CREATE INDEX IF NOT EXISTS queue_evict ON queue (upstream, state, priority DESC, id);
CREATE TABLE IF NOT EXISTS targets (
    upstream TEXT NOT NULL,
    gateway TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    system_type INTEGER NOT NULL,
    system_address INTEGER NOT NULL,
    component_type INTEGER NOT NULL,
    component_address INTEGER NOT NULL,
    conditions TEXT NOT NULL DEFAULT '',
    described TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (upstream, gateway, source)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Offer:
    """A stored event the writer offers to every upstream."""

    gateway: str
    epoch: int
    site: str
    event: Event


class Row(NamedTuple):
    """A pending upload, as the forwarder sends it."""

    id: int
    key: str
    target: str
    priority: int
    kind: str
    active: bool
    adu: bytes
    created_ms: int


@dataclass(slots=True)
class _Place:
    target: Target
    conditions: frozenset[str]
    described: str


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class UpstreamQueue:
    """The queue and address book of every upstream of one collector."""

    def __init__(self, path: Path, upstreams: Sequence[UpstreamConfig], *,
                 tz: tzinfo | None = None, metrics: Metrics | None = None) -> None:
        self.path = path
        self.metrics = metrics
        self.upstreams = {u.name: u for u in upstreams}
        self.tz = tz
        self.lock = threading.Lock()
        self.counts: dict[str, Counter[str]] = {u.name: Counter() for u in upstreams}
        """Per upstream: queued, skipped (no bit / unchanged), evicted, expired, ..."""
        private_file(path)  # sources, descriptions and addresses of every site: owner only
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a queued fire alarm survives power loss
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)
        self._places: dict[tuple[str, str, str], _Place] = {}
        self._taken: dict[str, set[str]] = {u.name: set() for u in upstreams}
        self._depth: dict[str, list[int]] = {}  # upstream -> [rows, bytes] pending
        self._reload_places()

    def close(self) -> None:
        with self.lock:
            self._db.close()

    # -- the writer thread -------------------------------------------------------------------

    def enqueue(self, offers: Sequence[Offer], now_ms: int | None = None) -> int:
        """Queue the uploads of ``offers`` for every upstream that takes them, in one
        transaction (durable when this returns). Returns the rows queued."""
        wanted = [(up, offer) for up in self.upstreams.values() for offer in offers
                  if _wanted(up, offer)]
        if not wanted:  # most groups: measurements only, or events nobody forwards
            return 0
        now = _now_ms() if now_ms is None else now_ms
        queued = 0
        with self.lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for up, offer in wanted:
                    queued += self._offer(up, offer, now)
                for up in {up.name: up for up, _ in wanted}.values():
                    self._evict(up.name)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._reload_places()
                raise
        return queued

    def _offer(self, up: UpstreamConfig, offer: Offer, now: int) -> int:
        name, ev = up.name, offer.event
        key = f"{offer.gateway}:{offer.epoch:x}:{ev.seq}"
        place = self._place(name, offer)
        counts = self.counts[name]
        if place is None:
            counts["no_address"] += 1
            return 0
        if self._db.execute("SELECT 1 FROM queue WHERE upstream = ? AND key = ?",
                            (name, key)).fetchone() is not None:
            counts["duplicate"] += 1  # a redelivered message: queued once
            return 0
        made = upload(ev, place.target, place.conditions, tz=self.tz)
        if not isinstance(made, str) and not ev.active and not up.restores:
            self._save_place(name, offer, place, made)  # the word forgets it; nothing sent
            counts["skipped"] += 1
            return 0
        if isinstance(made, str):
            counts["skipped"] += 1
            log.debug("upstream %s: %s %s not sent: %s", name, offer.gateway, ev.source.id, made)
            return 0
        text = ev.source.description or ""
        config = system_config(place.target, text) \
            if place.target.kind == "system" and text != place.described else None
        try:  # encoded before anything is written: one bad record costs itself
            body = encode_adu(made.adu, up.profile.max_adu)
            head = None if config is None else encode_adu(config, up.profile.max_adu)
        except (EncodeError, ValueError) as exc:
            counts["unencodable"] += 1
            log.error("upstream %s: %s %s seq %d cannot be encoded, not sent: %s", name,
                      offer.gateway, ev.source.id, ev.seq, exc)
            return 0
        n = 0
        if head is not None:  # the system's text first: its word has none (图6)
            n += self._insert(name, key + ":cfg", place.target.key, int(ev.priority),
                              "config", True, head, now)
            place.described = text
        n += self._insert(name, key, place.target.key, int(ev.priority),
                          made.sent_as.value, ev.active, body, now)
        self._save_place(name, offer, place, made)
        return n

    def _insert(self, name: str, key: str, target: str, priority: int, kind: str,
                active: bool, adu: bytes, now: int) -> int:
        self._db.execute(
            "INSERT INTO queue (upstream, key, target, priority, kind, active, adu, created_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (name, key, target, priority, kind, int(active), adu, now))
        depth = self._depth[name]
        depth[0] += 1
        depth[1] += len(adu)
        self.counts[name]["queued"] += 1
        return 1

    def _save_place(self, name: str, offer: Offer, place: _Place, made: Upload) -> None:
        place.conditions = made.conditions
        self._db.execute(
            "UPDATE targets SET conditions = ?, described = ? "
            "WHERE upstream = ? AND gateway = ? AND source = ?",
            (",".join(sorted(made.conditions)), place.described, name, offer.gateway,
             offer.event.source.id))

    def _place(self, name: str, offer: Offer) -> _Place | None:
        """The source's address for this upstream, allocated (and stored) at first sight."""
        src = offer.event.source
        found = self._places.get((name, offer.gateway, src.id))
        if found is not None:
            return found
        taken = self._taken[name]
        if len(taken) >= MAX_TARGETS:
            return None
        target = preferred_target(src)
        if target is not None and target.key in taken and target.kind == "system":
            target = self._free_system(taken, target)
        if target is None or target.key in taken:
            target = self._generic(name, src.system_type, src.system_address,
                                   src.component_type)
        self._db.execute(
            "INSERT INTO targets (upstream, gateway, source, kind, system_type, "
            "system_address, component_type, component_address) VALUES (?,?,?,?,?,?,?,?)",
            (name, offer.gateway, src.id, target.kind, target.system_type,
             target.system_address, target.component_type, target.component_address))
        taken.add(target.key)
        place = self._places[(name, offer.gateway, src.id)] = _Place(target, frozenset(), "")
        return place

    def _free_system(self, taken: set[str], want: Target) -> Target | None:
        """Another gateway's panel has this system: the first free address of its type."""
        for sa in range(1, 256):
            t = Target("system", want.system_type, sa)
            if t.key not in taken:
                return t
        return None

    def _generic(self, name: str, st: int | None, sa: int | None, ct: int | None) -> Target:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?",
                               (f"next_address:{name}",)).fetchone()
        address = GENERIC_BASE if row is None else int(row[0])
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         (f"next_address:{name}", address + 1))
        return Target("component", st if st is not None else GENERIC,
                      sa if sa is not None else GENERIC, ct if ct is not None else GENERIC,
                      address & 0xFFFF_FFFF)

    def _reload_places(self) -> None:
        """Addresses, conditions and depths from the database (at open, and after a
        rolled-back transaction: what the database holds is the truth)."""
        self._places.clear()
        for taken in self._taken.values():
            taken.clear()
        for up, gw, src, kind, st, sa, ct, ca, conds, desc in self._db.execute(
                "SELECT upstream, gateway, source, kind, system_type, system_address, "
                "component_type, component_address, conditions, described FROM targets"):
            if up in self.upstreams:
                t = Target(kind, st, sa, ct, ca)
                self._places[(up, gw, src)] = _Place(
                    t, frozenset(c for c in conds.split(",") if c), desc)
                self._taken[up].add(t.key)
        for name in self.upstreams:
            rows, size = self._db.execute(
                "SELECT count(*), coalesce(sum(length(adu)), 0) FROM queue "
                "WHERE upstream = ? AND state = 'pending'", (name,)).fetchone()
            self._depth[name] = [int(rows), int(size)]

    def _expire_old(self, name: str, now: int) -> None:
        """Expire rows past ``queue_max_age_s`` (counted, logged)."""
        up = self.upstreams[name]
        oldest = now - int(up.queue_max_age_s * 1000)
        expired = self._db.execute(
            "SELECT id, priority, length(adu), kind FROM queue WHERE upstream = ? "
            "AND state = 'pending' AND created_ms < ?", (name, oldest)).fetchall()
        for row_id, _, size, _ in expired:
            self._drop(name, row_id, size, now, "expired")
        if expired:
            fire = sum(1 for r in expired if r[1] == 0)
            log.log(logging.ERROR if fire else logging.WARNING,
                    "upstream %s: %d upload(s) (%d fire alarm(s)) expired unsent after %.0f s "
                    "(queue_max_age_s)", name, len(expired), fire, up.queue_max_age_s)

    def _evict(self, name: str) -> None:
        """Past ``queue_max`` rows or bytes: the oldest row of the lowest class goes (a fire
        alarm only when nothing else is left), counted and logged."""
        up = self.upstreams[name]
        depth = self._depth[name]
        now = _now_ms()
        max_bytes = up.queue_max * ROW_BYTES_MAX
        while depth[0] > up.queue_max or depth[1] > max_bytes:
            row = self._db.execute(
                "SELECT id, priority, length(adu), kind FROM queue WHERE upstream = ? "
                "AND state = 'pending' ORDER BY priority DESC, id LIMIT 1", (name,)).fetchone()
            if row is None:  # pragma: no cover - depth counts pending rows
                break
            row_id, priority, size, kind = row
            self._drop(name, row_id, size, now, "evicted")
            log.log(logging.ERROR if priority == 0 else logging.WARNING,
                    "upstream %s: queue full (%d rows, max %d): evicted a %s upload "
                    "(priority %d)", name, depth[0] + 1, up.queue_max, kind, priority)
            self.counts[name][f"evicted_p{priority}"] += 1

    def _drop(self, name: str, row_id: int, size: int, now: int, why: str) -> None:
        self._db.execute("UPDATE queue SET state = ?, adu = x'', done_ms = ? WHERE id = ?",
                         (why, now, row_id))
        depth = self._depth[name]
        depth[0] -= 1
        depth[1] -= size
        self.counts[name][why] += 1
        if self.metrics is not None:
            self.metrics.upstream_dropped.inc(name, why)

    # -- the forwarder threads ---------------------------------------------------------------

    def enqueue_own(self, name: str, key: str, priority: int, kind: str, adu: bytes,
                    now_ms: int | None = None) -> int:
        """Queue an upload of the UITD's own (target :data:`OWN_TARGET`: the check-post answer,
        type 24), once per ``key`` like any upload, durable when this returns. Returns 1 if
        queued, 0 if the key was queued before."""
        now = _now_ms() if now_ms is None else now_ms
        with self.lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("SELECT 1 FROM queue WHERE upstream = ? AND key = ?",
                              (name, key)).fetchone() is not None:
                    self.counts[name]["duplicate"] += 1
                    db.execute("COMMIT")
                    return 0
                n = self._insert(name, key, OWN_TARGET, priority, kind, True, adu, now)
                self._evict(name)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._reload_places()
                raise
        return n

    def check_post_due(self, name: str) -> int | None:
        """When the answer to the latest check-post of ``name`` is due (epoch ms); None: no
        check-post known, or one without a time limit."""
        with self.lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?",
                                   (f"check_post_due:{name}",)).fetchone()
        return None if row is None or int(row[0]) <= 0 else int(row[0])

    def set_check_post_due(self, name: str, due_ms: int | None) -> None:
        """Remember (durably) when the latest check-post of ``name`` is to be answered."""
        with self.lock:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             (f"check_post_due:{name}", 0 if due_ms is None else due_ms))

    def next_rows(self, name: str, busy: Sequence[int], limit: int) -> list[Row]:
        """Up to ``limit`` rows to send now: heads of their targets, not in ``busy`` (in
        flight), fire first, then by priority and age."""
        out: list[Row] = []
        skip = set(busy)
        with self.lock:
            cur = self._db.execute(
                "SELECT q.id, q.key, q.target, q.priority, q.kind, q.active, q.adu, "
                "q.created_ms FROM queue q WHERE q.upstream = ? "
                "AND q.state = 'pending' AND q.id = (SELECT min(p.id) FROM queue p "
                "WHERE p.upstream = q.upstream AND p.target = q.target AND p.state = 'pending')"
                " ORDER BY q.priority, q.id", (name,))
            for r in cur:
                if r[0] in skip:
                    continue
                out.append(Row(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7]))
                if len(out) >= limit:
                    break
            cur.close()
        return out

    def confirmed(self, name: str, row_ids: Sequence[int], now_ms: int | None = None) -> int:
        """The centre confirmed these rows: done (their keys kept a while), in one
        transaction. Returns how many were still pending (not evicted meanwhile).

        Committed with ``synchronous=NORMAL``: a confirm lost to a power cut (not to
        ``kill -9``: the WAL is in the page cache) only means the upload is sent once more,
        and the centre records a repeat; fsyncing every confirm halved the drain rate."""
        if not row_ids:
            return 0
        now = _now_ms() if now_ms is None else now_ms
        done = 0
        with self.lock:
            db = self._db
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                depth = self._depth[name]
                for row_id in row_ids:
                    row = db.execute("SELECT length(adu) FROM queue WHERE id = ? AND "
                                     "state = 'pending'", (row_id,)).fetchone()
                    if row is None:
                        continue
                    db.execute("UPDATE queue SET state = 'done', adu = x'', done_ms = ? "
                               "WHERE id = ?", (now, row_id))
                    depth[0] -= 1
                    depth[1] -= int(row[0])
                    done += 1
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._reload_places()
                raise
            finally:
                db.execute("PRAGMA synchronous=FULL")
            self.counts[name]["confirmed"] += done
        return done

    def expire(self, now_ms: int | None = None) -> None:
        """Periodic: expire old rows and forget old done keys."""
        now = _now_ms() if now_ms is None else now_ms
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for name in self.upstreams:
                    self._expire_old(name, now)
                    self._db.execute("DELETE FROM queue WHERE upstream = ? AND state != "
                                     "'pending' AND done_ms < ?", (name, now - KEEP_DONE_MS))
                    self._db.execute(
                        "DELETE FROM queue WHERE id IN (SELECT id FROM queue WHERE upstream = ?"
                        " AND state != 'pending' ORDER BY id DESC LIMIT -1 OFFSET ?)",
                        (name, MAX_DONE_ROWS))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def pending(self, name: str) -> int:
        """Pending rows (from memory: cheap)."""
        return self._depth[name][0]

    def depth(self, name: str) -> tuple[int, int, int | None]:
        """Pending rows, their bytes, and when the oldest was queued (epoch ms)."""
        with self.lock:
            rows, size = self._depth[name]
            oldest = self._db.execute(
                "SELECT min(created_ms) FROM queue WHERE upstream = ? AND state = 'pending'",
                (name,)).fetchone()[0]
        return rows, size, None if oldest is None else int(oldest)


def _wanted(up: UpstreamConfig, offer: Offer) -> bool:
    ev = offer.event
    if ev.type.value not in up.events:
        return False
    return any(fnmatch.fnmatchcase(offer.site, glob) for glob in up.sites)
