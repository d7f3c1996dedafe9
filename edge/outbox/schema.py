"""Opening the outbox database: connection settings, schema, and the files next to it.

Durability choices (each one is why a committed record survives a power cut):

* ``journal_mode=WAL``: a commit appends to the write-ahead log, so committing costs one
  sequential write and one fsync, and readers never block the writer.
* ``synchronous=FULL``: in WAL mode SQLite then fsyncs the WAL at every commit. NORMAL would
  sync only at checkpoints, which survives ``kill -9`` but can lose the last commits on power
  loss, and the panel driver confirms a frame (GB/T 26875.3 command 3) once its records are
  committed. Throughput comes from group commit instead (see ``outbox.py``).
* The directory is fsynced once when the database file is created (SQLite syncs the
  directory for the WAL it creates, not for the main file).
* ``auto_vacuum`` stays off: freed pages are reused by later inserts and the file keeps its
  high-water size, so space the outbox once had is still its own when the disk fills.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path
from typing import Any

import aiosqlite

from .config import OutboxConfig
from .errors import ErrorReason, OutboxError, OutboxLocked
from .store import Tally, counter_key

__all__ = ["SCHEMA_VERSION", "acquire_lock", "connect", "new_epoch"]

SCHEMA_VERSION = 1

_DDL = (
    # seq is the rowid: an ack deletes by seq with one b-tree lookup. It is assigned by the
    # outbox from meta.next_seq (never by SQLite), so seqs are not reused after deletes.
    """CREATE TABLE IF NOT EXISTS outbox (
        seq       INTEGER PRIMARY KEY,
        priority  INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 3),
        stored_ms INTEGER NOT NULL,
        payload   BLOB NOT NULL
    )""",
    # Send order and eviction order are both "by class, oldest first": one index serves both.
    "CREATE INDEX IF NOT EXISTS outbox_send_order ON outbox (priority, seq)",
    # next_seq, the epoch and the eviction counters; updated in the transaction that changes
    # them.
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
)


def new_epoch() -> int:
    """A random epoch in 1..2**63-1 (63 random bits: SQLite's INTEGER is signed 64-bit)."""
    return secrets.randbelow(2**63 - 1) + 1


def acquire_lock(db_path: Path) -> int:
    """An exclusive ``flock`` on ``<db>.lock``: one outbox per database, because seqs are
    handed out from memory. The kernel drops the lock when the process dies (even by
    ``kill -9``), so there is no stale lock to clean up."""
    fd = os.open(f"{db_path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutboxLocked(f"{db_path} is open in another outbox") from None
    return fd


async def connect(config: OutboxConfig) -> tuple[aiosqlite.Connection, Tally]:
    """Open (creating if needed) and read the state; sqlite3 errors propagate to the caller."""
    path = config.path
    created = not path.exists()
    db = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        await db.execute(f"PRAGMA busy_timeout={int(config.busy_timeout_ms)}")
        (mode,) = await _one(db, "PRAGMA journal_mode=WAL")
        if str(mode).lower() != "wal":
            raise OutboxError(ErrorReason.OTHER, f"{path}: journal_mode stays {mode!r}")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute(f"PRAGMA wal_autocheckpoint={int(config.wal_autocheckpoint_pages)}")
        if config.max_file_bytes is not None:
            (page_size,) = await _one(db, "PRAGMA page_size")
            await db.execute(f"PRAGMA max_page_count={config.max_file_bytes // int(page_size)}")
        await _create_schema(db, path)
        if created:
            _fsync_dir(path.parent)
        return db, await _load(db)
    except BaseException:
        await db.close()
        raise


async def _create_schema(db: aiosqlite.Connection, path: Path) -> None:
    # One transaction: a kill during creation leaves either nothing or the whole schema.
    await db.execute("BEGIN IMMEDIATE")
    try:
        (version,) = await _one(db, "PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise OutboxError(
                ErrorReason.OTHER, f"{path}: schema v{version} is newer than v{SCHEMA_VERSION}"
            )
        for statement in _DDL:
            await db.execute(statement)
        # The store's epoch (docs/wire-protocol.md, "Epochs"): made once, when the store is
        # created, and kept for its life; a new file is a new epoch, so the collector never
        # takes its seqs 1, 2, 3... for repeats of an earlier store's.
        await db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)",
                         (new_epoch(),))
        await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        await db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            await db.execute("ROLLBACK")
        raise


async def _load(db: aiosqlite.Connection) -> Tally:
    meta: dict[str, int] = {
        k: v for k, v in await db.execute_fetchall("SELECT key, value FROM meta")
    }
    (max_seq,) = await _one(db, "SELECT coalesce(max(seq), 0) FROM outbox")
    depth, nbytes = [0] * 4, [0] * 4
    for priority, count, size in await db.execute_fetchall(
        "SELECT priority, count(*), coalesce(sum(length(payload)), 0) FROM outbox GROUP BY 1"
    ):
        depth[priority], nbytes[priority] = count, size
    return Tally(
        epoch=int(meta["epoch"]),
        # max_seq + 1 as well: a database written by hand (or restored) never reuses a seq.
        next_seq=max(int(meta.get("next_seq", 1)), int(max_seq) + 1),
        depth=depth,
        nbytes=nbytes,
        evicted=[int(meta.get(counter_key("evicted", p), 0)) for p in range(4)],
        expired=[int(meta.get(counter_key("expired", p), 0)) for p in range(4)],
    )


async def _one(db: aiosqlite.Connection, sql: str) -> tuple[Any, ...]:
    async with db.execute(sql) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise OutboxError(ErrorReason.OTHER, f"no result from {sql!r}")
    return tuple(row)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
