"""Room on disk: living through SQLITE_FULL, the reserve file, periodic maintenance.

What a full disk looks like in WAL mode (measured on a 2 MiB tmpfs, see tests/edge): the
WAL grows until a write fails with SQLITE_FULL, and then nothing can be deleted, because a
DELETE writes WAL frames too, and a checkpoint cannot move the WAL into the database file
because the file would have to grow. Evicting alone cannot get out of that. So, on
SQLITE_FULL:

1. **Checkpoint** (``walcheckpoint(RESTART)``): once the WAL is copied into the database,
   the next transaction writes the WAL from its start, inside the space it already has.
2. If the checkpoint itself fails, delete the **reserve file** (``<db>.reserve``, 8 MiB by
   default, allocated at open) and checkpoint again: that space was kept for this moment.
3. **Pin the file size**: ``max_page_count`` is set to the current page count, so from now
   on the database cannot grow and every later shortage is a *logical* SQLITE_FULL raised
   by SQLite before it touches the disk - the state from which steps 4-5 always work.
4. **Evict the oldest measurements** (more on each attempt) and retry the transaction:
   their pages go to SQLite's freelist and the retried inserts reuse them.
5. Still full: :class:`OutboxFull`, and nothing of that append was stored. The driver holds
   or denies upstream (a panel retransmits), which loses nothing, where evicting alarms
   to store more alarms would.

Maintenance lifts the pin and re-creates the reserve once the disk has room again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import aiosqlite

from protocols.wire import Priority

from .errors import ErrorReason, OutboxError
from .store import Changes, evict_oldest

if TYPE_CHECKING:
    from .outbox import Outbox

__all__ = ["DiskGuard", "checkpoint", "expire", "file_bytes", "maintain", "make_space"]

log = logging.getLogger(__name__)
_MEASUREMENT = Priority.MEASUREMENT


class DiskGuard:
    """The reserve file and the file-size pin."""

    def __init__(self, db_path: Path, reserve_bytes: int, wal_bytes: int) -> None:
        self.path = Path(f"{db_path}.reserve")
        self.size = reserve_bytes
        # Free space wanted before growing again: the reserve plus two WAL cycles.
        self.headroom = reserve_bytes + 2 * wal_bytes
        self.reserve_ok = reserve_bytes == 0
        self.pinned = False
        self._max_pages = 0  # the page limit to restore when unpinning

    async def ensure_reserve(self) -> bool:
        if self.size:
            self.reserve_ok = await asyncio.to_thread(_allocate, self.path, self.size)
        return self.reserve_ok

    def release_reserve(self) -> bool:
        """Free the reserve; True if that freed anything."""
        if not self.size:
            return False
        self.reserve_ok = False
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("disk full: released the outbox reserve %s", self.path)
        return True

    async def pin(self, outbox: Outbox) -> bool:
        """Step 3; True if it was not pinned yet."""
        if self.pinned:
            return False

        async def run(db: aiosqlite.Connection) -> int:
            pages = await _pragma_int(db, "page_count")
            limit = await _pragma_int(db, "max_page_count")
            await db.execute(f"PRAGMA max_page_count={pages}")
            return limit

        self._max_pages = await outbox.with_connection(run)
        self.pinned = True
        log.warning("disk full: the outbox stays at its current file size until there is room")
        return True

    async def relax(self, outbox: Outbox) -> None:
        """Re-create the reserve and lift the pin when the disk has room again."""
        if self.reserve_ok and not self.pinned:
            return
        free = shutil.disk_usage(self.path.parent).free
        if free < self.headroom or not await self.ensure_reserve():
            return
        if self.pinned:

            async def run(db: aiosqlite.Connection) -> None:
                await db.execute(f"PRAGMA max_page_count={self._max_pages}")

            await outbox.with_connection(run)
            self.pinned = False
            log.warning("the disk has room again: the outbox may grow")


async def _pragma_int(db: aiosqlite.Connection, name: str) -> int:
    async with db.execute(f"PRAGMA {name}") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


def _allocate(path: Path, size: int) -> bool:
    """``posix_fallocate`` really allocates the blocks (a sparse file would free nothing
    when deleted). Blocking: runs in a thread."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_blocks * 512 >= size:
            return True
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return False
    return True


def file_bytes(db_path: Path) -> int:
    total = 0
    for p in (db_path, Path(f"{db_path}-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size
    return total


async def maintain(outbox: Outbox) -> None:
    """Age expiry and disk recovery; errors are counted and logged, never fatal."""
    try:
        await outbox.expire()
    except OutboxError as e:
        log.warning("outbox expiry failed: %s", e)
    try:
        await outbox.disk.relax(outbox)
    except sqlite3.Error as e:
        outbox.count_error(e)


async def expire(outbox: Outbox, now_ms: int) -> dict[Priority, int]:
    """Drop records older than their class's ``max_age_s``, oldest first by seq; the first
    record young enough ends a class's sweep. Counted as evicted and as expired."""
    ages = outbox.config.max_age_s

    async def body(db: aiosqlite.Connection, changes: Changes) -> None:
        for p in Priority:
            age = ages.get(p)
            if age is None or outbox.depth(p) == 0:
                continue
            cutoff = now_ms - int(age * 1000)

            def older(_size: int, stored_ms: int, cutoff: int = cutoff) -> bool:
                return stored_ms < cutoff

            n, _ = await evict_oldest(db, p, older, changes)
            changes.evicted[p] += n
            changes.expired[p] += n

    changes = await outbox.transact(body)
    return {p: changes.expired[p] for p in Priority if changes.expired[p]}


async def make_space(outbox: Outbox, attempt: int, wanted: int) -> bool:
    """Steps 1-4 of the module docstring; True if anything changed that may help."""
    disk = outbox.disk
    progress = False
    if not await checkpoint(outbox) and disk.release_reserve():
        progress = True
        await checkpoint(outbox)
    with contextlib.suppress(sqlite3.Error):
        progress = await disk.pin(outbox) or progress
    count = max(wanted, outbox.depth(_MEASUREMENT) // 100, 64) * 4**attempt
    for _ in range(2):
        try:
            return await _evict_measurements(outbox, count) > 0 or progress
        except sqlite3.Error as e:
            if outbox.count_error(e) is not ErrorReason.FULL or not disk.release_reserve():
                return progress
            progress = True
            await checkpoint(outbox)
    return progress


async def checkpoint(outbox: Outbox) -> bool:
    """Copy the WAL into the database so the next transaction writes the WAL from its
    start; False if it could not (the database file could not grow)."""

    async def run(db: aiosqlite.Connection) -> bool:
        rows = list(await db.execute_fetchall("PRAGMA walcheckpoint(RESTART)"))
        return bool(rows) and rows[0][0] == 0

    try:
        return await outbox.with_connection(run)
    except sqlite3.Error as e:
        log.info("checkpoint on a full disk failed: %s", e)
        return False


async def _evict_measurements(outbox: Outbox, count: int) -> int:
    remaining = count

    def take(_size: int, _stored_ms: int) -> bool:
        nonlocal remaining
        remaining -= 1
        return remaining >= 0

    async def body(db: aiosqlite.Connection, changes: Changes) -> None:
        n, _ = await evict_oldest(db, _MEASUREMENT, take, changes)
        changes.evicted[_MEASUREMENT] += n

    changes = await outbox.transact(body)
    evicted = changes.evicted[_MEASUREMENT]
    if evicted:
        log.warning("disk full: evicted %d measurements from the outbox", evicted)
    return evicted
