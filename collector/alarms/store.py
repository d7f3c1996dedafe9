"""The alarm book's file: ``alarms.sqlite`` in the state directory (WAL, ``synchronous=FULL``).

Every change is one transaction, committed before the caller goes on: the writer thread's
before the MQTT message that carried the record is acknowledged, the API's before it answers.
An alarm row holds its escalation timer (``next_step_ms``), so a collector killed at any
instant starts again with every alarm, its timeline and when its next step is due.

Not thread-safe by itself: :class:`collector.alarms.book.AlarmBook` holds its lock around
every call.
"""

from __future__ import annotations

import heapq
import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from collector.alarms.model import Alarm, AuditEntry, TimelineEntry
from common.files import FILE_MODE, private_file

__all__ = ["FILE_MODE", "AlarmStore", "Stored", "private_file"]

# FILE_MODE and private_file live in common.files (every state file of the collector uses
# them): the book holds names, notes and the audit log (personal data), owner only like a
# secret. SQLite gives its -wal and -shm files the mode of the database file, so they follow.

SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm (
    id TEXT PRIMARY KEY,
    gateway TEXT NOT NULL,
    site TEXT NOT NULL,
    source TEXT NOT NULL,
    description TEXT NOT NULL,
    type TEXT NOT NULL,
    priority TEXT NOT NULL,
    state TEXT NOT NULL,
    raised_ms INTEGER NOT NULL,
    panel_ms INTEGER,
    cleared_ms INTEGER,
    raise_count INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL,
    acknowledged_by TEXT,
    acknowledged_ms INTEGER,
    note TEXT,
    resolution TEXT,
    resolved_by TEXT,
    resolved_ms INTEGER,
    resolution_note TEXT,
    escalation_policy TEXT,
    escalation_step INTEGER NOT NULL,
    gateway_ms INTEGER,
    next_step_ms INTEGER,
    open INTEGER NOT NULL,
    closed_ms INTEGER,
    last_epoch INTEGER,
    last_seq INTEGER,
    timeline_n INTEGER NOT NULL DEFAULT 0,
    last_raise_ms INTEGER,
    last_raise_source_ms INTEGER
);
CREATE INDEX IF NOT EXISTS alarm_open ON alarm (open, raised_ms);
CREATE INDEX IF NOT EXISTS alarm_raised ON alarm (raised_ms);
CREATE INDEX IF NOT EXISTS alarm_closed ON alarm (closed_ms) WHERE open = 0;
CREATE INDEX IF NOT EXISTS alarm_closed_state ON alarm (state, raised_ms) WHERE open = 0;
CREATE INDEX IF NOT EXISTS alarm_closed_site ON alarm (site, raised_ms) WHERE open = 0;
CREATE TABLE IF NOT EXISTS timeline (
    alarm_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    what TEXT NOT NULL,
    by TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS timeline_alarm ON timeline (alarm_id);
CREATE TABLE IF NOT EXISTS audit (
    at_ms INTEGER NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    alarm_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at_ms);
"""
_FIELDS = tuple(Alarm.__dataclass_fields__)
_EXTRA = ("last_epoch", "last_seq", "timeline_n", "closed_ms", "last_raise_ms",
          "last_raise_source_ms")
_COLUMNS = (*_FIELDS, "open", *_EXTRA)
_SELECT = f"SELECT {', '.join((*_FIELDS, *_EXTRA))} FROM alarm"
_SELECT_ALARM = f"SELECT {', '.join(_FIELDS)} FROM alarm"
_ACKNOWLEDGED, _RAISED, _ID = (_FIELDS.index(f) for f in ("acknowledged", "raised_ms", "id"))
_UPSERT = (f"INSERT OR REPLACE INTO alarm ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_COLUMNS))})")


class Stored:
    """An alarm as the book keeps it: the public value and the book's own bookkeeping."""

    __slots__ = ("alarm", "closed_ms", "raised_at", "stamp", "timeline_n")

    def __init__(self, alarm: Alarm, stamp: tuple[int, int] | None = None,
                 timeline_n: int = 0, closed_ms: int | None = None,
                 raised_at: tuple[int, int | None] | None = None) -> None:
        self.alarm = alarm
        self.stamp = stamp
        """(epoch, seq) of the last record applied to it: a redelivered record is not a
        re-raise, an older one arriving late changes nothing."""
        self.timeline_n = timeline_n
        self.closed_ms = closed_ms
        self.raised_at = raised_at
        """Gateway receive time and panel time of the latest raise (what a reset compares
        with: collector.risk.compare_record_times); None for a gateway-level alarm."""

    def but(self, alarm: Alarm, timeline_n: int, closed_ms: int | None) -> Stored:
        """A copy with another alarm value, timeline count and closing time."""
        return Stored(alarm, self.stamp, timeline_n, closed_ms, self.raised_at)

    def row(self) -> tuple[Any, ...]:
        a = self.alarm
        epoch, seq = self.stamp if self.stamp is not None else (None, None)
        at_ms, at_source_ms = self.raised_at if self.raised_at is not None else (None, None)
        return (*(getattr(a, f) for f in _FIELDS), int(a.open), _signed(epoch), seq,
                self.timeline_n, self.closed_ms, at_ms, at_source_ms)


def _signed(epoch: int | None) -> int | None:
    # Epochs are unsigned 64-bit; SQLite integers are signed.
    return None if epoch is None else epoch - (1 << 64) if epoch >= 1 << 63 else epoch


def _unsigned(epoch: int | None) -> int | None:
    return None if epoch is None else epoch & ((1 << 64) - 1)


def _alarm(row: Sequence[Any]) -> Alarm:
    """An alarm from its columns in field order (positional: what a list does per row)."""
    values = list(row)
    values[_ACKNOWLEDGED] = bool(values[_ACKNOWLEDGED])
    return Alarm(*values)


def _stored(row: Sequence[Any]) -> Stored:
    n = len(_FIELDS)
    values = dict(zip(_FIELDS, row[:n], strict=True))
    values["acknowledged"] = bool(values["acknowledged"])
    epoch, seq, timeline_n, closed_ms, at_ms, at_source_ms = row[n:]
    return Stored(Alarm(**values), None if seq is None else (_unsigned(epoch) or 0, seq),
                  timeline_n, closed_ms, None if at_ms is None else (at_ms, at_source_ms))


class AlarmStore:
    """Alarms, their timelines and the audit log, in one SQLite file."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """``read_only``: another process's file (the command line beside a running
        collector); sqlite3.OperationalError if there is none."""
        if read_only:
            self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                       isolation_level=None, check_same_thread=False)
            return
        private_file(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an alarm and its timer survive power loss
        self._db.executescript(SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(alarm)")}
        for column in ("last_raise_ms", "last_raise_source_ms"):  # added during issue 15
            if column not in have:
                self._db.execute(f"ALTER TABLE alarm ADD COLUMN {column} INTEGER")

    def open_alarms(self) -> list[Stored]:
        """Every open alarm (loaded at start)."""
        return [_stored(r) for r in self._db.execute(f"{_SELECT} WHERE open = 1")]

    def get(self, alarm_id: str) -> Stored | None:
        row = self._db.execute(f"{_SELECT} WHERE id = ?", (alarm_id,)).fetchone()
        return None if row is None else _stored(row)

    def save(self, alarms: Iterable[Stored], timeline: Sequence[tuple[str, TimelineEntry]],
             audit: Sequence[AuditEntry] = ()) -> None:
        """One transaction: the alarms' rows, new timeline entries, new audit entries."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(_UPSERT, [s.row() for s in alarms])
            db.executemany("INSERT INTO timeline VALUES (?, ?, ?, ?, ?)",
                           [(i, t.at_ms, t.what, t.by, t.detail) for i, t in timeline])
            db.executemany("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)",
                           [(a.at_ms, a.user, a.action, a.alarm_id, a.origin, a.detail)
                            for a in audit])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def select(self, where: str, args: Sequence[object], limit: int = -1) -> Iterator[Alarm]:
        """Alarms matching ``where`` (SQL built by the book from fixed fragments), newest
        first, at most ``limit`` (-1: all)."""
        for row in self._db.execute(f"{_SELECT_ALARM} WHERE {where} ORDER BY raised_ms DESC, "
                                    "id LIMIT ?", (*args, limit)):
            yield _alarm(row)

    def select_closed_by_site(self, where: str, args: Sequence[object], sites: Sequence[str],
                              limit: int) -> list[Alarm]:
        """Closed alarms of ``sites`` matching ``where``, newest first, at most ``limit``:
        one query per site on ``alarm_closed_site``, read lazily and merged, so only the rows
        returned are read past the index (a user of 10 sites among 200 does not scan the
        other 190's history)."""
        query = (f"{_SELECT_ALARM} INDEXED BY alarm_closed_site WHERE open = 0 AND site = ? "
                 f"AND {where} ORDER BY raised_ms DESC, id LIMIT ?")
        cursors = [self._db.execute(query, (site, *args, limit)) for site in sites]
        try:
            merged = heapq.merge(*cursors, key=lambda r: (-r[_RAISED], r[_ID]))
            return [_alarm(r) for r in itertools.islice(merged, limit)]
        finally:
            for c in cursors:
                c.close()

    def sites(self) -> list[str]:
        """Every site the file has an alarm of."""
        return [r[0] for r in self._db.execute("SELECT DISTINCT site FROM alarm")]

    def timeline(self, alarm_id: str) -> list[TimelineEntry]:
        return [TimelineEntry(*r) for r in self._db.execute(
            "SELECT at_ms, what, by, detail FROM timeline WHERE alarm_id = ? ORDER BY rowid",
            (alarm_id,))]

    def audit(self, limit: int, before_ms: int | None,
              sites: Sequence[str] | None = None, before_seq: int | None = None
              ) -> list[AuditEntry]:
        """Audit entries, newest first (time, then place in the log); with ``sites``, only
        those of alarms of these sites (filtered before the limit; an entry whose alarm is gone
        shows to all-sites only). The page after ``(before_ms, before_seq)``, the last entry
        of the previous one; ``before_ms`` alone: entries older than that millisecond."""
        before = before_ms if before_ms is not None else 1 << 62
        seq = before_seq if before_seq is not None and before_ms is not None else 0
        where = "(at_ms < ? OR (at_ms = ? AND rowid < ?))"
        args: tuple[object, ...] = (before, before, seq)
        if sites is not None:  # one JSON parameter: no limit on the number of sites
            where += (" AND alarm_id IN (SELECT id FROM alarm WHERE site IN "
                      "(SELECT value FROM json_each(?)))")
            args += (json.dumps(list(sites)),)
        rows = self._db.execute(
            "SELECT at_ms, user, action, alarm_id, origin, detail, rowid FROM audit "
            f"WHERE {where} ORDER BY at_ms DESC, rowid DESC LIMIT ?", (*args, limit))
        return [AuditEntry(*r) for r in rows]

    def prune(self, closed_before_ms: int) -> int:
        """Forget alarms closed before ``closed_before_ms``, their timelines, and audit
        entries as old; returns how many alarms went."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM timeline WHERE alarm_id IN (SELECT id FROM alarm "
                       "WHERE open = 0 AND closed_ms < ?)", (closed_before_ms,))
            n = db.execute("DELETE FROM alarm WHERE open = 0 AND closed_ms < ?",
                           (closed_before_ms,)).rowcount
            # An alarm still kept (open, or closed within the retention) keeps its audit: who
            # acknowledged a fire alarm that is still active must not be forgotten.
            db.execute("DELETE FROM audit WHERE at_ms < ? AND alarm_id NOT IN "
                       "(SELECT id FROM alarm)", (closed_before_ms,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return n

    def close(self) -> None:
        self._db.close()
