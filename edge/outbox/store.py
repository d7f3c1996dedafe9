"""The SQL of the outbox, one function per statement shape, and the counts it keeps.

Everything here runs inside a transaction that :mod:`edge.outbox.core` opens and commits;
nothing here commits. Deletions report what they removed (count and payload bytes per
class) into a :class:`Changes`, which the outbox applies to its in-memory counts only after
the COMMIT succeeded, so a rolled-back transaction leaves no trace in memory either.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import aiosqlite

from protocols.wire import Priority

__all__ = [
    "Changes",
    "Row",
    "Tally",
    "counter_key",
    "delete_ranges",
    "delete_seqs",
    "evict_oldest",
    "held_between",
    "insert",
    "pending",
    "write_meta",
]

Row = tuple[int, int, int, bytes]
"""(seq, priority, stored_ms, payload) as inserted."""

_SCAN_CHUNK = 1024


@dataclass(slots=True)
class Changes:
    """Deltas of one transaction, applied to the outbox's counts after COMMIT."""

    depth: list[int] = field(default_factory=lambda: [0] * 4)
    nbytes: list[int] = field(default_factory=lambda: [0] * 4)
    evicted: list[int] = field(default_factory=lambda: [0] * 4)
    expired: list[int] = field(default_factory=lambda: [0] * 4)
    deleted: set[int] = field(default_factory=set)
    """Seqs deleted one by one (acks, confirmations)."""
    deleted_through: list[int] = field(default_factory=lambda: [0] * 4)
    """Per class: every row with seq <= this was deleted (eviction, expiry)."""
    next_seq: int = 0
    """The new meta.next_seq when the transaction numbered records (0: unchanged)."""

    def add(self, priority: int, size: int) -> None:
        self.depth[priority] += 1
        self.nbytes[priority] += size

    def remove(self, priority: int, count: int, size: int) -> None:
        self.depth[priority] -= count
        self.nbytes[priority] -= size

    @property
    def counters_changed(self) -> bool:
        return any(self.evicted) or any(self.expired)


@dataclass(slots=True)
class Tally:
    """What the outbox holds, counted in memory: records and payload bytes per class, the
    next seq, and the cumulative eviction and expiry counts. Read once at open (one scan),
    then updated from each transaction's :class:`Changes` after its COMMIT, so ``stats()``
    costs no scan."""

    next_seq: int = 1
    depth: list[int] = field(default_factory=lambda: [0] * 4)
    nbytes: list[int] = field(default_factory=lambda: [0] * 4)
    evicted: list[int] = field(default_factory=lambda: [0] * 4)
    """Cumulative since the database was created (persisted in ``meta``)."""
    epoch: int = 0
    """The store's epoch (``meta.epoch``), made with the database."""
    expired: list[int] = field(default_factory=lambda: [0] * 4)

    def apply(self, changes: Changes) -> None:
        for p in range(4):
            self.depth[p] += changes.depth[p]
            self.nbytes[p] += changes.nbytes[p]
            self.evicted[p] += changes.evicted[p]
            self.expired[p] += changes.expired[p]
        if changes.next_seq:
            self.next_seq = changes.next_seq


def counter_key(kind: str, priority: int) -> str:
    return f"{kind}.{Priority(priority).label}"


async def insert(db: aiosqlite.Connection, rows: Sequence[Row]) -> None:
    await db.executemany(
        "INSERT INTO outbox (seq, priority, stored_ms, payload) VALUES (?, ?, ?, ?)", rows
    )


async def write_meta(db: aiosqlite.Connection, tally: Tally, changes: Changes) -> None:
    """Persist next_seq and the cumulative counters as they will be after ``changes``, in
    the caller's transaction."""
    items = [("next_seq", changes.next_seq or tally.next_seq)]
    for p in range(4):
        items.append((counter_key("evicted", p), tally.evicted[p] + changes.evicted[p]))
        items.append((counter_key("expired", p), tally.expired[p] + changes.expired[p]))
    await db.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        items,
    )


async def delete_seqs(db: aiosqlite.Connection, seqs: Iterable[int], changes: Changes) -> None:
    """Delete by seq (acks). Seqs that are gone already (evicted, acked twice) are skipped.

    One statement for the whole set: the seqs travel as a JSON array through ``json_each``,
    which has no bound-parameter limit, and RETURNING says what each deleted row weighed.
    """
    text = json.dumps(sorted(seqs))
    for seq, priority, size in await db.execute_fetchall(
        "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?)) "
        "RETURNING seq, priority, length(payload)",
        (text,),
    ):
        changes.remove(priority, 1, size)
        changes.deleted.add(seq)


async def delete_ranges(
    db: aiosqlite.Connection, ranges: Sequence[tuple[int, int]], changes: Changes
) -> list[int]:
    """Delete every stored row with a seq in one of ``ranges`` (``(first, last)``, inclusive;
    a collector's confirmation), whatever its state; returns the deleted seqs, sorted.

    One statement: the ranges travel as JSON, and each is a rowid range search (a range
    that names seqs no longer stored costs nothing).
    """
    deleted = []
    for seq, priority, size in await db.execute_fetchall(
        "DELETE FROM outbox WHERE seq IN (SELECT o.seq FROM json_each(?) AS r "
        "JOIN outbox AS o ON o.seq BETWEEN r.value ->> 0 AND r.value ->> 1) "
        "RETURNING seq, priority, length(payload)",
        (json.dumps(ranges),),
    ):
        changes.remove(priority, 1, size)
        deleted.append(seq)
    changes.deleted.update(deleted)
    deleted.sort()
    return deleted


async def held_between(db: aiosqlite.Connection, first: int, last: int) -> list[int]:
    """The stored seqs in ``first..last``, ascending."""
    rows = await db.execute_fetchall(
        "SELECT seq FROM outbox WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last)
    )
    return [seq for (seq,) in rows]


async def evict_oldest(
    db: aiosqlite.Connection,
    priority: int,
    take: Callable[[int, int], bool],
    changes: Changes,
) -> tuple[int, int]:
    """Delete the oldest rows of one class while ``take(size, stored_ms)`` says so.

    Rows are visited in seq order through the (priority, seq) index; the first row ``take``
    refuses ends the scan, and everything before it goes in one range DELETE. Returns
    (rows, payload bytes) removed; the caller counts them as evicted or expired.
    """
    after, last, count, size = 0, 0, 0, 0
    done = False
    while not done:
        rows = list(
            await db.execute_fetchall(
                "SELECT seq, length(payload), stored_ms FROM outbox "
                "WHERE priority = ? AND seq > ? ORDER BY seq LIMIT ?",
                (priority, after, _SCAN_CHUNK),
            )
        )
        for seq, length, stored_ms in rows:
            if not take(length, stored_ms):
                done = True
                break
            last, count, size = seq, count + 1, size + length
        if len(rows) < _SCAN_CHUNK:
            break
        after = last
    if count:
        await db.execute("DELETE FROM outbox WHERE priority = ? AND seq <= ?", (priority, last))
        changes.remove(priority, count, size)
        changes.deleted_through[priority] = max(changes.deleted_through[priority], last)
    return count, size


async def pending(
    db: aiosqlite.Connection, priority: int, after: int, limit: int
) -> Iterable[tuple[int, int, bytes]]:
    """(seq, stored_ms, payload) of one class past a cursor, in send order."""
    return await db.execute_fetchall(  # type: ignore[return-value]  # rows are tuples
        "SELECT seq, stored_ms, payload FROM outbox "
        "WHERE priority = ? AND seq > ? ORDER BY seq LIMIT ?",
        (priority, after, limit),
    )


async def oldest_stored_ms(db: aiosqlite.Connection) -> int | None:
    """Store time of the oldest record not yet acknowledged (seq order is store order)."""
    rows = list(await db.execute_fetchall("SELECT stored_ms FROM outbox ORDER BY seq LIMIT 1"))
    return int(rows[0][0]) if rows else None
