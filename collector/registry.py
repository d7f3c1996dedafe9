"""The gateway registry, the sites' colours and the collector's status snapshot, in SQLite.

Online / offline comes from three sources:

* the retained ``status`` message and the last will (docs/wire-protocol.md): ``online``, or
  ``offline`` with a reason (``lwt`` when the broker lost the gateway, ``shutdown``...);
* heartbeats: a gateway that sent nothing (records, health, status) for ``health_interval_s ×
  offline_factor`` is marked offline with reason ``stale`` - a will can be late or lost (a
  broker restart without persistence), a silent gateway cannot hide;
* any message from a gateway that is ``stale`` (or never seen) brings it back online. A gateway
  offline by its will or a shutdown comes back only with its ``online`` status: a delayed
  message queued before the loss must not resurrect it.

The database (``<state_dir>/registry.sqlite``, WAL) is written by the collector's writer thread
only; ``firegate collector status`` opens it read-only from another process, whether the
collector runs or not. :func:`read_status` is that reader.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.risk import Assessment, Colour, Condition
from common.files import private_file
from protocols.wire import GatewayState, Health, LinkState, Status

__all__ = ["GatewayInfo", "Registry", "RegistryView", "SiteInfo", "StatusView", "Transition",
           "read_status"]

ONLINE, OFFLINE, UNKNOWN = "online", "offline", "unknown"
STALE = "stale"
SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway (
    id TEXT PRIMARY KEY, site TEXT, state TEXT NOT NULL, reason TEXT, since_ms INTEGER,
    last_seen_ms INTEGER, last_health_ms INTEGER, version TEXT, outbox_depth INTEGER,
    outbox_oldest_s REAL, last_seq INTEGER, evicted INTEGER, links_down TEXT
);
CREATE TABLE IF NOT EXISTS condition (
    gateway TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL, site TEXT NOT NULL,
    since_ms INTEGER NOT NULL, seq INTEGER NOT NULL, colour TEXT NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (gateway, source, kind)
);
CREATE TABLE IF NOT EXISTS site (
    id TEXT PRIMARY KEY, colour TEXT NOT NULL, reasons TEXT NOT NULL, since_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    collector TEXT PRIMARY KEY, updated_ms INTEGER NOT NULL, body TEXT NOT NULL
);
"""
_GW_COLUMNS = ("id", "site", "state", "reason", "since_ms", "last_seen_ms", "last_health_ms",
               "version", "outbox_depth", "outbox_oldest_s", "last_seq", "evicted", "links_down")


@dataclass(slots=True)
class GatewayInfo:
    """What the collector knows about one gateway."""

    id: str
    site: str | None = None
    state: str = UNKNOWN
    reason: str | None = None
    since_ms: int | None = None
    last_seen_ms: int | None = None
    last_health_ms: int | None = None
    version: str | None = None
    outbox_depth: int | None = None
    outbox_oldest_s: float | None = None
    last_seq: int | None = None
    evicted: int | None = None
    links_down: list[str] = field(default_factory=list)

    def row(self) -> tuple[Any, ...]:
        # getattr, not asdict (a deep copy of every field): every gateway of every write
        # group is saved, 10,000 UITDs' included
        return tuple(json.dumps(self.links_down) if c == "links_down" else getattr(self, c)
                     for c in _GW_COLUMNS)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> GatewayInfo:
        values = dict(zip(_GW_COLUMNS, row, strict=True))
        values["links_down"] = json.loads(values["links_down"] or "[]")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Transition:
    """A gateway went offline or came back online."""

    gateway_id: str
    site: str | None
    online: bool
    time_ms: int
    reason: str
    key: str
    """Names the offline episode, for notification de-duplication."""
    previous: str
    """The state before: ``online``, ``offline`` or ``unknown`` (never seen)."""


@dataclass(frozen=True, slots=True)
class SiteInfo:
    id: str
    colour: str
    reasons: list[str]
    since_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class RegistryView:
    """The gateways and sites as of the writer's last flush: copies, for any thread (the
    API). Read them, never change them."""

    gateways: dict[str, GatewayInfo]
    sites: dict[str, SiteInfo]


class Registry:
    """The writer thread's registry: in memory, flushed to SQLite in one transaction."""

    def __init__(self, path: Path) -> None:
        private_file(path)  # gateway ids, sites and their conditions: owner only
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        # Added later (collector.risk: a reset clears only what was raised by its time); an
        # older file gets the columns, its rows NULL (read as: since_ms, no panel time).
        have = {r[1] for r in self._db.execute("PRAGMA table_info(condition)")}
        for column in ("raised_ms", "raised_source_ms"):
            if column not in have:
                self._db.execute(f"ALTER TABLE condition ADD COLUMN {column} INTEGER")
        self.gateways: dict[str, GatewayInfo] = {
            row[0]: GatewayInfo.from_row(row)
            for row in self._db.execute(f"SELECT {', '.join(_GW_COLUMNS)} FROM gateway")}
        self.sites: dict[str, SiteInfo] = {
            r[0]: SiteInfo(r[0], r[1], json.loads(r[2]), r[3], r[4])
            for r in self._db.execute("SELECT id, colour, reasons, since_ms, updated_ms FROM site")}
        self._dirty: set[str] = set()
        self._dirty_sites: set[str] = set()
        # What view() hands out: copies published by flush() (the writer changes its own
        # GatewayInfo objects in place, so other threads never see those).
        self._view_lock = threading.Lock()
        self._view_gateways = {k: dataclasses.replace(v) for k, v in self.gateways.items()}
        self._view_sites = dict(self.sites)
        self._raised: list[Condition] = []
        self._cleared: list[Condition] = []

    def conditions(self) -> list[Condition]:
        """The active risk conditions saved by the last run."""
        rows = self._db.execute("SELECT site, gateway, source, kind, since_ms, seq, colour, text, "
                                "raised_ms, raised_source_ms FROM condition")
        return [Condition(r[0], r[1], r[2], r[3], r[4], r[5], Colour(r[6]), r[7], r[8], r[9])
                for r in rows]

    def _gw(self, gateway_id: str) -> GatewayInfo:
        info = self.gateways.get(gateway_id)
        if info is None:
            info = self.gateways[gateway_id] = GatewayInfo(gateway_id)
        self._dirty.add(gateway_id)
        return info

    def site_of(self, gateway_id: str) -> str | None:
        info = self.gateways.get(gateway_id)
        return None if info is None else info.site

    # -- inputs (writer thread) --------------------------------------------------------------

    def seen(self, gateway_id: str, site: str | None, now_ms: int) -> Transition | None:
        """Any message from the gateway: last seen; back online if it was stale or unknown."""
        info = self._gw(gateway_id)
        info.last_seen_ms = now_ms
        if site is not None:
            info.site = site
        if info.state == UNKNOWN or (info.state == OFFLINE and info.reason == STALE):
            return self._set(info, ONLINE, "seen", now_ms, f"online:{gateway_id}:{now_ms}")
        return None

    def on_status(self, status: Status, now_ms: int) -> Transition | None:
        """A status message (retained, live, or the will published by the broker)."""
        info = self._gw(status.gateway_id)
        info.last_seen_ms = now_ms  # the broker vouches for the connection as of now
        if status.site is not None:
            info.site = status.site
        if status.version is not None:
            info.version = status.version
        if status.state is GatewayState.ONLINE:
            if info.state != ONLINE:
                return self._set(info, ONLINE, status.reason or "status", status.ts_ms,
                                 f"online:{status.gateway_id}:{status.ts_ms}")
            return None
        reason = status.reason or OFFLINE
        if info.state == OFFLINE:
            # Already offline (a stale heartbeat noticed it first, or the same will again):
            # the same episode. Keep the more telling reason; no new transition.
            info.reason = reason
            return None
        # The will carries its connect time, one per connection: it names the episode, so
        # the same will redelivered (or replayed as retained) is the same episode.
        since = now_ms if reason == "lwt" else status.ts_ms
        return self._set(info, OFFLINE, reason, since,
                         f"offline:{status.gateway_id}:{status.ts_ms}")

    def on_health(self, health: Health, now_ms: int) -> Transition | None:
        info = self._gw(health.gateway_id)
        info.last_health_ms = now_ms
        info.version = health.version
        info.outbox_depth = health.outbox_depth
        info.outbox_oldest_s = health.outbox_oldest_s
        info.last_seq = health.last_seq
        info.evicted = sum(health.evicted.values())
        info.links_down = sorted(k for k, v in health.links.items() if v is LinkState.DOWN)
        return self.seen(health.gateway_id, None, now_ms)

    def check_stale(self, now_ms: int, limit_ms: int) -> list[Transition]:
        """Online gateways silent for more than ``limit_ms`` go offline (reason ``stale``)."""
        out = []
        for info in self.gateways.values():
            if info.state == ONLINE and info.last_seen_ms is not None \
                    and now_ms - info.last_seen_ms > limit_ms:
                self._dirty.add(info.id)
                out.append(self._set(info, OFFLINE, STALE, now_ms,
                                     f"offline:{info.id}:stale:{info.last_seen_ms}"))
        return out

    def _set(self, info: GatewayInfo, state: str, reason: str, since_ms: int,
             key: str) -> Transition:
        previous = info.state
        info.state, info.reason, info.since_ms = state, reason, since_ms
        return Transition(info.id, info.site, state == ONLINE, since_ms, reason, key, previous)

    def record_conditions(self, raised: list[Condition], cleared: list[Condition]) -> None:
        self._raised += raised
        self._cleared += cleared

    def set_site(self, a: Assessment, now_ms: int) -> bool:
        """Remember a site's colour; True when colour or reasons changed (store a point)."""
        old = self.sites.get(a.site)
        reasons = list(a.reasons)
        if old is not None and old.colour == a.colour.value and old.reasons == reasons:
            return False
        since = old.since_ms if old is not None and old.colour == a.colour.value else now_ms
        self.sites[a.site] = SiteInfo(a.site, a.colour.value, reasons, since, now_ms)
        self._dirty_sites.add(a.site)
        return True

    def flush(self) -> None:
        """Write what changed, in one transaction."""
        if not (self._dirty or self._dirty_sites or self._raised or self._cleared):
            return
        db = self._db
        db.execute("BEGIN")
        db.executemany(f"INSERT OR REPLACE INTO gateway ({', '.join(_GW_COLUMNS)}) VALUES "
                       f"({', '.join('?' * len(_GW_COLUMNS))})",
                       [self.gateways[g].row() for g in self._dirty])
        db.executemany("DELETE FROM condition WHERE gateway=? AND source=? AND kind=?",
                       [c.key for c in self._cleared])
        db.executemany("INSERT OR REPLACE INTO condition (gateway, source, kind, site, since_ms, "
                       "seq, colour, text, raised_ms, raised_source_ms) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [(c.gateway_id, c.source_id, c.kind, c.site, c.since_ms, c.seq,
                         c.colour.value, c.text, c.raised_ms, c.raised_source_ms)
                        for c in self._raised])
        db.executemany("INSERT OR REPLACE INTO site VALUES (?, ?, ?, ?, ?)",
                       [(s.id, s.colour, json.dumps(s.reasons, ensure_ascii=False), s.since_ms,
                         s.updated_ms) for s in (self.sites[k] for k in self._dirty_sites)])
        db.execute("COMMIT")
        with self._view_lock:
            for g in self._dirty:
                self._view_gateways[g] = dataclasses.replace(self.gateways[g])
            for k in self._dirty_sites:
                self._view_sites[k] = self.sites[k]
        self._dirty.clear()
        self._dirty_sites.clear()
        self._raised.clear()
        self._cleared.clear()

    def view(self) -> RegistryView:
        """Gateways and sites as of the last flush, safe to read from any thread."""
        with self._view_lock:
            return RegistryView(dict(self._view_gateways), dict(self._view_sites))

    def save_snapshot(self, collector_id: str, now_ms: int, body: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO snapshot VALUES (?, ?, ?)",
                         (collector_id, now_ms, json.dumps(body, ensure_ascii=False)))

    def close(self) -> None:
        self.flush()
        self._db.close()


# -- the read side (``firegate collector status``) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusView:
    """Everything ``collector status`` shows from the registry database."""

    gateways: list[GatewayInfo]
    sites: list[SiteInfo]
    conditions: list[Condition]
    snapshots: dict[str, tuple[int, dict[str, Any]]]
    """Per collector id: (updated_ms, body)."""


def read_status(path: Path) -> StatusView:
    """Read the registry without writing to it (``mode=ro``); FileNotFoundError if absent."""
    if not path.exists():
        raise FileNotFoundError(path)
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        gateways = [GatewayInfo.from_row(r) for r in db.execute(
            f"SELECT {', '.join(_GW_COLUMNS)} FROM gateway ORDER BY id")]
        sites = [SiteInfo(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in db.execute(
            "SELECT id, colour, reasons, since_ms, updated_ms FROM site ORDER BY id")]
        conditions = [Condition(r[0], r[1], r[2], r[3], r[4], r[5], Colour(r[6]), r[7])
                      for r in db.execute("SELECT site, gateway, source, kind, since_ms, seq, "
                                          "colour, text FROM condition ORDER BY since_ms")]
        snapshots = {r[0]: (r[1], json.loads(r[2])) for r in db.execute(
            "SELECT collector, updated_ms, body FROM snapshot")}
    finally:
        db.close()
    return StatusView(gateways, sites, conditions, snapshots)
