"""The part of the outbox that the committer and the disk recovery work on.

:class:`~edge.outbox.outbox.Outbox` is the public face: the request queue, the committer
task, the lock file, the checks every call makes. The committer (:mod:`edge.outbox.commit`)
and the full-disk recovery (:mod:`edge.outbox.space`) need much less: the connection and
its lock, the in-memory :class:`~edge.outbox.store.Tally`, the records out (in flight or
sent), the disk guard, the error counters and the clock. That part is a :class:`Core` of its
own, which they receive, so no module of the package imports the one that calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

import aiosqlite

from .config import OutboxConfig
from .disk import DiskGuard
from .errors import ErrorReason, OutboxClosed, classify, wrap
from .inflight import InFlight
from .store import Changes, Tally, write_meta

__all__ = ["Core"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class Core:
    """The open database and what is known about it in memory; one per :class:`Outbox`.

    ``db`` is set when the outbox opens and cleared when it closes; ``closing`` tells the
    committer to drain its queue and stop. ``ready`` is set while ``next_batch`` has
    something to hand out; ``stored`` is set, and replaced, by each commit that stores
    records. Every write goes through :meth:`transact`, so the in-memory counts change only
    after a COMMIT.
    """

    def __init__(self, config: OutboxConfig, clock_ms: Callable[[], int]) -> None:
        self.config = config
        self.clock = clock_ms
        """Wall-clock milliseconds for store times and age limits (tests move it)."""
        self.db: aiosqlite.Connection | None = None
        self.lock = asyncio.Lock()
        """Serializes the connection's users: transactions, reads, pragmas."""
        self.tally = Tally()
        self.errors: Counter[str] = Counter()
        self.foreign_confirms = 0
        """Confirmations of another epoch, ignored (since open)."""
        self.inflight = InFlight()
        """The records out with the uplink: in flight, or sent and awaiting confirmation."""
        self.ready = asyncio.Event()
        self.stored = asyncio.Event()
        self.closing = False
        wal_bytes = config.wal_autocheckpoint_pages * 4096  # SQLite's default page size
        self.disk = DiskGuard(config.path, config.reserve_bytes, wal_bytes)

    def conn(self) -> aiosqlite.Connection:
        """The connection, also while closing (the committer drains the queue)."""
        if self.db is None:
            raise OutboxClosed("the outbox is not open")
        return self.db

    async def transact(
        self, body: Callable[[aiosqlite.Connection, Changes], Awaitable[None]]
    ) -> Changes:
        """Run ``body`` in one write transaction; apply its changes after COMMIT.

        Raises sqlite3 errors as they are (the caller decides how to count and recover).
        """
        db = self.conn()
        async with self.lock:
            changes = Changes()
            await db.execute("BEGIN IMMEDIATE")
            try:
                await body(db, changes)
                if changes.next_seq or changes.counters_changed:
                    await write_meta(db, self.tally, changes)
                await db.execute("COMMIT")
            except BaseException:
                await _rollback(db)
                raise
            self._apply(changes)
        return changes

    async def with_connection(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` on the connection, outside any transaction, serialized with the rest."""
        db = self.conn()
        async with self.lock:
            return await fn(db)

    def count_error(self, error: sqlite3.Error) -> ErrorReason:
        reason = classify(error)
        self.errors[reason] += 1
        log.warning("outbox %s: %s", self.config.path, error)
        return reason

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Count a sqlite3 error and raise it as its typed :class:`OutboxError`."""
        try:
            yield
        except sqlite3.Error as e:
            self.count_error(e)
            raise wrap(e) from e

    def forget(self, seqs: Iterable[int]) -> None:
        """Acked seqs are no longer out, whether or not their rows were still there."""
        self.inflight.forget(seqs)
        self.update_ready()

    def update_ready(self) -> None:
        # Pending = stored minus out (in flight or sent).
        if sum(self.tally.depth) > len(self.inflight):
            self.ready.set()
        else:
            self.ready.clear()

    def _apply(self, changes: Changes) -> None:
        self.tally.apply(changes)
        if changes.next_seq:
            self.stored.set()
            self.stored = asyncio.Event()
        for p, through in enumerate(changes.deleted_through):
            if through:
                self.inflight.forget_through(p, through)
        self.inflight.forget(changes.deleted)
        self.update_ready()


async def _rollback(db: aiosqlite.Connection) -> None:
    # SQLite rolls back by itself after some errors (SQLITE_FULL among them).
    if db.in_transaction:
        try:
            await db.execute("ROLLBACK")
        except sqlite3.Error as e:
            log.error("outbox rollback failed: %s", e)
