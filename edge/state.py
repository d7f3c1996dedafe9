"""The gateway's local state, for technicians: what the CLI shows while the agent runs and after.

``<data_dir>/state.db`` (SQLite, WAL) holds what ``firegate status``, ``events`` and ``sensors``
read: recent events (bounded, newest kept), the latest value of every sensor, the active
threshold alarms (so a restart clears an alarm raised before it), and snapshots of links,
driver counters, outbox and uplink, refreshed every few seconds by the running agent.

This is a *view*, not the data path: the outbox is what must survive a power cut and is
fsynced at every commit; this file is written once a second in one transaction with
``synchronous=NORMAL``, so a power cut may cost the last second of local history, never a
record (those are in the outbox). The agent is the only writer; readers open it read-only and
never block it (WAL).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.wire import Event, Measurement, Record

__all__ = ["EventRow", "SensorRow", "StateReader", "StateWriter"]

_DDL = (
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY, seq INTEGER, receive_ms INTEGER NOT NULL, source_ms INTEGER,
        source_id TEXT NOT NULL, bus TEXT NOT NULL, description TEXT, type TEXT NOT NULL,
        active INTEGER NOT NULL, priority INTEGER NOT NULL, value REAL, lim REAL, detail TEXT)""",
    "CREATE INDEX IF NOT EXISTS events_time ON events (receive_ms)",
    """CREATE TABLE IF NOT EXISTS sensors (
        source_id TEXT PRIMARY KEY, bus TEXT NOT NULL, description TEXT, quantity TEXT NOT NULL,
        value REAL NOT NULL, unit TEXT NOT NULL, receive_ms INTEGER NOT NULL, seq INTEGER)""",
    """CREATE TABLE IF NOT EXISTS active_alarms (
        source_id TEXT NOT NULL, type TEXT NOT NULL, PRIMARY KEY (source_id, type))""",
    """CREATE TABLE IF NOT EXISTS conditions (
        source_id TEXT NOT NULL, type TEXT NOT NULL, PRIMARY KEY (source_id, type))""",
    """CREATE TABLE IF NOT EXISTS snapshot (
        key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_ms INTEGER NOT NULL)""",
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    else:
        db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for statement in _DDL:
            db.execute(statement)
    return db


class StateWriter:
    """Collects what passes through the pipeline and writes it in one transaction per flush.

    ``note`` is cheap (memory only) and is called with every stored batch; ``flush`` runs in a
    worker thread from the agent's ``state`` task. Sensors are coalesced (the latest value per
    sensor), events are kept in order; ``keep_events`` bounds the table (GB 25506-style graphic
    display units keep at least 10,000 records per class: the default keeps 20,000 events).
    """

    def __init__(self, path: Path, *, keep_events: int = 20_000) -> None:
        self.path = path
        self.keep_events = keep_events
        self._db = _connect(path, readonly=False)
        self._events: list[Event] = []
        self._sensors: dict[str, Measurement] = {}
        self._snapshots: dict[str, object] = {}
        self._active: set[tuple[str, str]] | None = None
        self._lock = threading.Lock()  # flush and write_conditions run in worker threads

    def note(self, records: Iterable[Record]) -> None:
        for r in records:
            if isinstance(r, Measurement):
                self._sensors[r.source.id] = r
            else:
                self._events.append(r)

    def set_snapshot(self, key: str, value: object) -> None:
        self._snapshots[key] = value

    def set_active(self, active: set[tuple[str, str]]) -> None:
        self._active = set(active)

    def load_conditions(self) -> set[tuple[str, str]]:
        rows = self._db.execute("SELECT source_id, type FROM conditions").fetchall()
        return {(str(a), str(b)) for a, b in rows}

    def write_conditions(self, raised: Iterable[tuple[str, str]],
                         cleared: Iterable[tuple[str, str]]) -> None:
        """Record condition changes now, in their own transaction (blocking: call it from a
        thread). Called after the outbox committed the events, before a driver hears that
        they are stored, so a restart knows every condition the cloud was told about (a kill
        between the two at worst repeats a raise or a restore, never loses one)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                db.executemany("INSERT OR IGNORE INTO conditions VALUES (?,?)", list(raised))
                db.executemany("DELETE FROM conditions WHERE source_id = ? AND type = ?",
                               list(cleared))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def load_active(self) -> set[tuple[str, str]]:
        rows = self._db.execute("SELECT source_id, type FROM active_alarms").fetchall()
        return {(str(a), str(b)) for a, b in rows}

    def flush(self) -> None:
        """Write what was noted since the last flush (blocking; call it from a thread)."""
        events, self._events = self._events, []
        sensors, self._sensors = self._sensors, {}
        snapshots, self._snapshots = self._snapshots, {}
        active, self._active = self._active, None
        now = _now_ms()
        with self._lock:
            self._write(events, sensors, snapshots, active, now)

    def _write(self, events: list[Event], sensors: dict[str, Measurement],
               snapshots: dict[str, object], active: set[tuple[str, str]] | None,
               now: int) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO events (seq, receive_ms, source_ms, source_id, bus, description, "
                "type, active, priority, value, lim, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(e.seq or None, e.receive_ms, e.source_ms, e.source.id, e.source.bus.value,
                  e.source.description, e.type.value, int(e.active), int(e.priority), e.value,
                  e.limit, e.detail) for e in events])
            db.executemany(
                "INSERT OR REPLACE INTO sensors VALUES (?,?,?,?,?,?,?,?)",
                [(m.source.id, m.source.bus.value, m.source.description, m.quantity.value,
                  m.value, m.unit, m.receive_ms, m.seq or None) for m in sensors.values()])
            db.executemany(
                "INSERT OR REPLACE INTO snapshot VALUES (?,?,?)",
                [(k, json.dumps(v, ensure_ascii=False), now) for k, v in snapshots.items()])
            if active is not None:
                db.execute("DELETE FROM active_alarms")
                db.executemany("INSERT INTO active_alarms VALUES (?,?)", sorted(active))
            if events:
                db.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?",
                           (self.keep_events,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int | None
    receive_ms: int
    source_ms: int | None
    source_id: str
    bus: str
    description: str | None
    type: str
    active: bool
    priority: int
    value: float | None
    limit: float | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class SensorRow:
    source_id: str
    bus: str
    description: str | None
    quantity: str
    value: float
    unit: str
    receive_ms: int
    seq: int | None


class StateReader:
    """Read-only access for the CLI; works whether or not the agent is running."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"no local state at {path} (has the agent run here?)")
        self._db = _connect(path, readonly=True)

    def __enter__(self) -> StateReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._db.close()

    def events(self, *, since_ms: int | None = None, types: Sequence[str] = (),
               source: str | None = None, active_only: bool = False, limit: int = 100
               ) -> list[EventRow]:
        """Newest first."""
        where: list[str] = ["1=1"]
        args: list[object] = []
        if since_ms is not None:
            where.append("receive_ms >= ?")
            args.append(since_ms)
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            args.extend(types)
        if source:
            where.append("source_id LIKE ?")
            args.append(source.replace("*", "%"))
        if active_only:
            where.append("active = 1")
        rows = self._db.execute(
            "SELECT seq, receive_ms, source_ms, source_id, bus, description, type, active, "
            f"priority, value, lim, detail FROM events WHERE {' AND '.join(where)} "
            "ORDER BY id DESC LIMIT ?", [*args, limit]).fetchall()
        return [EventRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9],
                         r[10], r[11]) for r in rows]

    def sensors(self) -> list[SensorRow]:
        rows = self._db.execute("SELECT * FROM sensors ORDER BY source_id").fetchall()
        return [SensorRow(*r) for r in rows]

    def conditions(self) -> list[tuple[str, str]]:
        """Every condition raised and not restored (source id, event type)."""
        rows = self._db.execute("SELECT source_id, type FROM conditions ORDER BY 1, 2").fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def active_alarms(self) -> list[tuple[str, str]]:
        rows = self._db.execute("SELECT source_id, type FROM active_alarms ORDER BY 1").fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def snapshot(self, key: str) -> tuple[Any, int] | None:
        """The value stored under ``key`` and when (ms), or None."""
        row = self._db.execute("SELECT value, updated_ms FROM snapshot WHERE key = ?",
                               (key,)).fetchone()
        return None if row is None else (json.loads(row[0]), int(row[1]))

    def snapshots(self) -> Mapping[str, tuple[Any, int]]:
        rows = self._db.execute("SELECT key, value, updated_ms FROM snapshot").fetchall()
        return {str(k): (json.loads(v), int(t)) for k, v, t in rows}
