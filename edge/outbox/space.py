"""Room on disk: living through SQLITE_FULL, the reserve file, periodic maintenance.

What a full disk looks like in WAL mode (measured on a 2 MiB tmpfs, see tests/edge): the
WAL grows until a write fails with SQLITE_FULL, and then nothing can be deleted, because a
DELETE writes WAL frames too, and a checkpoint cannot move the WAL into the database file
because the file would have to grow. Evicting alone cannot get out of that. So, on
SQLITE_FULL:

1. **Checkpoint** (``wal_checkpoint(RESTART)``): once the WAL is copied into the database,
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

import contextlib
import logging
import sqlite3

import aiosqlite

from protocols.wire import Priority

from .core import Core
from .errors import ErrorReason, OutboxError
from .store import Changes, evict_oldest

__all__ = ["checkpoint", "expire", "maintain", "make_space", "relax"]

log = logging.getLogger(__name__)
_MEASUREMENT = Priority.MEASUREMENT


async def maintain(core: Core) -> None:
    """Age expiry and disk recovery; errors are counted and logged, never fatal."""
    try:
        async with core.guard():
            await expire(core, core.clock())
    except OutboxError as e:
        log.warning("outbox expiry failed: %s", e)
    try:
        await relax(core)
    except sqlite3.Error as e:
        core.count_error(e)


async def relax(core: Core) -> None:
    """Re-create the reserve and lift the pin when the disk has room again."""
    disk = core.disk
    if await disk.room_again() and disk.pinned:
        await core.with_connection(disk.unpin)
        log.warning("the disk has room again: the outbox may grow")


async def expire(core: Core, now_ms: int) -> dict[Priority, int]:
    """Drop records older than their class's ``max_age_s``, oldest first by seq; the first
    record young enough ends a class's sweep. Counted as evicted and as expired."""
    ages = core.config.max_age_s
    depth = core.tally.depth

    async def body(db: aiosqlite.Connection, changes: Changes) -> None:
        for p in Priority:
            age = ages.get(p)
            if age is None or depth[p] == 0:
                continue
            cutoff = now_ms - int(age * 1000)

            def older(_size: int, stored_ms: int, cutoff: int = cutoff) -> bool:
                return stored_ms < cutoff

            n, _ = await evict_oldest(db, p, older, changes)
            changes.evicted[p] += n
            changes.expired[p] += n

    changes = await core.transact(body)
    return {p: changes.expired[p] for p in Priority if changes.expired[p]}


async def make_space(core: Core, attempt: int, wanted: int) -> bool:
    """Steps 1-4 of the module docstring; True if anything changed that may help."""
    progress = False
    if not await checkpoint(core) and _release_reserve(core):
        progress = True
        await checkpoint(core)
    with contextlib.suppress(sqlite3.Error):
        if await core.with_connection(core.disk.pin):
            log.warning(
                "disk full: the outbox stays at its current file size until there is room"
            )
            progress = True
    count = max(wanted, core.tally.depth[_MEASUREMENT] // 100, 64) * 4**attempt
    for _ in range(2):
        try:
            return await _evict_measurements(core, count) > 0 or progress
        except sqlite3.Error as e:
            if core.count_error(e) is not ErrorReason.FULL or not _release_reserve(core):
                return progress
            progress = True
            await checkpoint(core)
    return progress


def _release_reserve(core: Core) -> bool:
    """Step 2: free the reserve file; True if that freed anything."""
    if not core.disk.release_reserve():
        return False
    log.warning("disk full: released the outbox reserve %s", core.disk.path)
    return True


async def checkpoint(core: Core) -> bool:
    """Copy the WAL into the database so the next transaction writes the WAL from its
    start; False if it could not (the database file could not grow)."""

    async def run(db: aiosqlite.Connection) -> bool:
        rows = list(await db.execute_fetchall("PRAGMA wal_checkpoint(RESTART)"))
        return bool(rows) and rows[0][0] == 0

    try:
        return await core.with_connection(run)
    except sqlite3.Error as e:
        log.info("checkpoint on a full disk failed: %s", e)
        return False


async def _evict_measurements(core: Core, count: int) -> int:
    remaining = count

    def take(_size: int, _stored_ms: int) -> bool:
        nonlocal remaining
        remaining -= 1
        return remaining >= 0

    async def body(db: aiosqlite.Connection, changes: Changes) -> None:
        n, _ = await evict_oldest(db, _MEASUREMENT, take, changes)
        changes.evicted[_MEASUREMENT] += n

    changes = await core.transact(body)
    evicted = changes.evicted[_MEASUREMENT]
    if evicted:
        log.warning("disk full: evicted %d measurements from the outbox", evicted)
    return evicted
