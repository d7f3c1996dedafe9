"""Messages the collector refused, kept with the reason so a person can look at them.

A payload that does not decode (``WireError.reason``: ``not_json``, ``bad_value``...), that
speaks for another gateway (``gateway_mismatch``), or whose points a sink refused for good
is stored here and then acknowledged: redelivering the same bytes cannot make them valid,
and a consumer that stops at bad input loses everything behind it.

Bounded twice, because bad input can come as a flood: each payload is cut to
``max_payload_bytes`` (the original size is kept), and the table holds at most ``max_rows``
letters - the oldest are evicted and counted. The per-reason counts are cumulative and survive
eviction and restarts: they are what ``collector status`` and the metrics report.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from common.files import private_file
from protocols.wire import MAX_PAYLOAD_BYTES

__all__ = ["DeadLetter", "DeadLetters"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms     INTEGER NOT NULL,
    topic     TEXT NOT NULL,
    reason    TEXT NOT NULL,
    path      TEXT,
    size      INTEGER NOT NULL,     -- bytes received
    payload   BLOB NOT NULL         -- the first max_payload_bytes of them
);
CREATE TABLE IF NOT EXISTS dead_letter_counts (
    reason TEXT PRIMARY KEY,
    count  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letter_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused message."""

    id: int
    at_ms: int
    topic: str
    reason: str
    path: str | None
    """Where in the payload the decoder stopped (``recs[3].v``), when it says."""
    size: int
    payload: bytes

    @property
    def truncated(self) -> bool:
        """True when only the first part of the payload was kept."""
        return len(self.payload) < self.size


class DeadLetters:
    """The dead-letter store in the SQLite file ``path``. Thread-safe."""

    def __init__(self, path: Path, *, max_rows: int = 2000,
                 max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        if max_rows < 1 or max_payload_bytes < 0:
            raise ValueError("max_rows must be >= 1 and max_payload_bytes >= 0")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_payload_bytes = max_payload_bytes
        private_file(self.path)  # the refused messages' bytes: owner only
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the message is acknowledged to the broker right after add() returns.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._closed = False

    def add(self, topic: str, payload: bytes, reason: str, path: str | None,
            now_ms: int) -> None:
        """Keep a refused message (its first ``max_payload_bytes``) and count its reason.

        ``reason`` is a :class:`~protocols.wire.WireErrorReason` value or another stable
        counter name (``sink_refused``); ``path`` is ``WireError.path`` when there is one.
        """
        reason = str(reason)
        kept = bytes(payload[: self.max_payload_bytes])
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT INTO dead_letters (at_ms, topic, reason, path, size, payload) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (now_ms, topic, reason, path or None, len(payload), kept))
                conn.execute(
                    "INSERT INTO dead_letter_counts VALUES (?, 1) "
                    "ON CONFLICT(reason) DO UPDATE SET count = count + 1", (reason,))
                newest = cur.lastrowid or 0
                evicted = conn.execute("DELETE FROM dead_letters WHERE id <= ?",
                                       (newest - self.max_rows,)).rowcount
                if evicted > 0:
                    conn.execute(
                        "INSERT INTO dead_letter_meta VALUES ('evicted', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                        (evicted,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def count_by_reason(self) -> dict[str, int]:
        """Cumulative refusals per reason (evicted letters included)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT reason, count FROM dead_letter_counts ORDER BY reason").fetchall()
        return {reason: int(n) for reason, n in rows}

    @property
    def total(self) -> int:
        """All refusals ever counted."""
        return sum(self.count_by_reason().values())

    @property
    def evicted(self) -> int:
        """Letters dropped to keep the table within ``max_rows``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM dead_letter_meta WHERE key = 'evicted'").fetchone()
        return int(row[0]) if row else 0

    def __len__(self) -> int:
        """Letters kept now."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def recent(self, n: int) -> list[DeadLetter]:
        """The ``n`` newest letters, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, at_ms, topic, reason, path, size, payload FROM dead_letters "
                "ORDER BY id DESC LIMIT ?", (max(0, n),)).fetchall()
        return [DeadLetter(int(i), int(at), topic, reason, path, int(size), bytes(payload))
                for i, at, topic, reason, path, size, payload in rows]

    def close(self) -> None:
        """Close the database. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
