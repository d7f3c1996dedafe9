"""The embedded store: points in one SQLite file, for a single site, a demo, or no InfluxDB.

Same interface and guarantees as the InfluxDB sink. A point is one row keyed by
``(measurement, tags, time_ns)`` - InfluxDB's series + time identity - and written with
``INSERT OR REPLACE``, so a redelivered point overwrites itself. ``tags`` and ``fields`` are
stored as compact JSON objects (the tags sorted by key, so equal tag sets are equal text);
``site``, ``gateway`` and ``source`` are copied into their own indexed columns for
``firegate collector query``. Strings are stored exactly: no line-protocol escaping here.

Durability: WAL with ``synchronous=FULL``. The pipeline acknowledges the MQTT messages as
soon as :meth:`SqliteSink.write` returns, so the transaction must survive a power cut, not
only a crash of the process (``NORMAL`` may roll back the last commits on power loss).
One transaction per write: all of its points or none.

Retention: :meth:`SqliteSink.prune` deletes points older than ``retention_days`` by point
time, at most ``limit`` of the oldest per call, each call one short transaction; the
collector's writer calls it from its periodic tick (hourly, then batch after batch while
there is more), so a large backlog of old points never holds up a write for long.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.points import FieldValue, Point, Storable
from collector.sinks.base import RewriteGuarantee, SinkError
from collector.sinks.config import DEFAULT_RETENTION_DAYS
from common.files import private_file

__all__ = ["SCHEMA_VERSION", "SqliteSink", "StoredPoint", "connect", "read_points"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    tags        TEXT NOT NULL,   -- JSON object, keys sorted
    time_ns     INTEGER NOT NULL,
    site        TEXT,            -- copies of the common tags, for filters
    gateway     TEXT,
    source      TEXT,
    fields      TEXT NOT NULL,   -- JSON object, in the point's field order
    PRIMARY KEY (measurement, tags, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS points_by_time ON points (time_ns);
CREATE INDEX IF NOT EXISTS points_by_gateway ON points (gateway, time_ns);
"""
_INSERT = ("INSERT OR REPLACE INTO points "
           "(measurement, tags, time_ns, site, gateway, source, fields) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
# The oldest ``limit`` points before a time, by the time index (which, the table being
# WITHOUT ROWID, holds the primary key: the delete needs no table scan).
_PRUNE = ("DELETE FROM points WHERE (measurement, tags, time_ns) IN "
          "(SELECT measurement, tags, time_ns FROM points WHERE time_ns < ? "
          "ORDER BY time_ns LIMIT ?)")
_DAY_NS = 86_400 * 1_000_000_000
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


_TagColumns = tuple[str, str | None, str | None, str | None]  # tags JSON, site, gateway, source
_tag_columns: dict[int, tuple[object, _TagColumns]] = {}
_TAG_COLUMNS_MAX = 32_768


def _columns(tags: tuple[tuple[str, str], ...]) -> _TagColumns:
    # Cached per tag tuple (points_for_batch shares one per series); the entry keeps the tuple
    # alive, so its id is not reused while cached.
    entry = _tag_columns.get(id(tags))
    if entry is not None and entry[0] is tags:
        return entry[1]
    key = tags
    if any(tags[i][0] > tags[i + 1][0] for i in range(len(tags) - 1)):
        tags = tuple(sorted(tags))  # the key must not depend on the caller's tag order
    d = dict(tags)
    columns = (_dumps(d), d.get("site"), d.get("gateway"), d.get("source"))
    if len(_tag_columns) >= _TAG_COLUMNS_MAX:
        _tag_columns.clear()
    _tag_columns[id(key)] = (key, columns)
    return columns


def _row(p: Point) -> tuple[str, str, int, str | None, str | None, str | None, str]:
    tags, site, gateway, source = _columns(p.tags)
    return (p.measurement, tags, p.time_ns, site, gateway, source, _dumps(dict(p.fields)))


def connect(path: Path, *, read_only: bool = False,
            busy_timeout_s: float = 10.0) -> sqlite3.Connection:
    """A connection to the store (created when writable and missing)."""
    if read_only:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        return conn
    private_file(path)  # every record of every site: owner only
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    # Another writer (a second collector on the same file, a backup) may hold the lock.
    conn.execute(f"PRAGMA busy_timeout={round(busy_timeout_s * 1000)}")
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return conn


class SqliteSink:
    """Stores points in the SQLite file ``path``; see the module docstring."""

    name = "sqlite"
    renders_lines = False

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0,
                 retention_days: int = DEFAULT_RETENTION_DAYS) -> None:
        if retention_days < 0:
            raise ValueError(f"retention_days must be >= 0, got {retention_days}")
        self.path = Path(path)
        self.retention_days = retention_days
        try:
            self._conn = connect(self.path, busy_timeout_s=busy_timeout_s)
        except sqlite3.Error as e:
            raise SinkError(f"cannot open store {self.path}: {e}") from e
        self._lock = threading.Lock()
        self._closed = False

    def write(self, points: Sequence[Storable]) -> None:
        """Store ``points`` in one transaction; overwrite rows with the same key. Points
        only (``renders_lines`` is false): a rendered line raises TypeError."""
        if not points:
            return
        if any(isinstance(p, str) for p in points):
            raise TypeError("SqliteSink stores Points, not rendered lines")
        try:
            rows = [_row(p) for p in points]  # type: ignore[arg-type]
        except (ValueError, TypeError) as e:  # NaN or an unknown type in a field
            raise SinkError(f"point cannot be stored: {e}", permanent=True) from e
        with self._lock:
            if self._closed:
                raise RuntimeError("write on a closed SqliteSink")
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                # Disk full, I/O error, locked past the busy timeout: the data is still in
                # the broker, and the next try may succeed.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise SinkError(f"store {self.path}: {e}") from e

    def prune(self, now_ms: int, *, limit: int = 5000) -> int:
        """Delete up to ``limit`` of the oldest points whose time is more than
        ``retention_days`` before ``now_ms``, in one transaction; the number deleted (less
        than ``limit``: nothing older is left). 0 with ``retention_days = 0``."""
        if self.retention_days == 0:
            return 0
        before_ns = now_ms * 1_000_000 - self.retention_days * _DAY_NS
        with self._lock:
            if self._closed:
                raise RuntimeError("prune on a closed SqliteSink")
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                deleted = conn.execute(_PRUNE, (before_ns, limit)).rowcount
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise SinkError(f"store {self.path}: prune: {e}") from e
        return int(deleted)

    def count(self) -> int:
        """Number of stored points."""
        with self._lock:
            row = self._conn.execute("SELECT count(*) FROM points").fetchone()
        return int(row[0])

    def rewrite_guarantee(self) -> RewriteGuarantee:
        return RewriteGuarantee("overwrite", "embedded SQLite store: one row per series and "
                                "time (INSERT OR REPLACE)")

    def close(self) -> None:
        """Close the database. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """A point read back from the store."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``collector query --json``)."""
        return {"measurement": self.measurement, "time_ns": self.time_ns,
                "tags": self.tags, "fields": self.fields}


def read_points(conn: sqlite3.Connection, *, measurement: str | None = None,
                gateway: str | None = None, site: str | None = None,
                source: str | None = None, since_ns: int | None = None,
                limit: int | None = 100) -> list[StoredPoint]:
    """The newest ``limit`` points matching every given filter, oldest first."""
    where: list[str] = []
    args: list[object] = []
    for column, value in (("measurement", measurement), ("gateway", gateway),
                          ("site", site), ("source", source)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if since_ns is not None:
        where.append("time_ns >= ?")
        args.append(since_ns)
    sql = "SELECT measurement, tags, fields, time_ns FROM points"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY time_ns DESC, measurement DESC, tags DESC"  # reversed below
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    rows = conn.execute(sql, args).fetchall()
    rows.reverse()
    return [StoredPoint(m, json.loads(t), json.loads(f), int(ns)) for m, t, f, ns in rows]
