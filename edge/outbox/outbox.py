"""The power-safe outbox: every record the drivers produce is committed here before MQTT.

Life of a record::

    driver ──append()──▶ committer (group commit, seq assigned) ──▶ SQLite (WAL, FULL)
    uplink ◀─next_batch()── pending, by class then seq ◀──────────────┘
    uplink ──ack(seqs)──▶ deleted (after the broker's PUBACK) / nack(seqs) ──▶ pending again

``append`` returns only once the records are durable, with their seqs; that is when a
panel frame may be confirmed. Nothing is deleted before ``ack``; a resend reuses the seq, so
the collector drops the duplicate. Full outbox, full disk and age limits are handled by
class, measurements first and fire alarms last, and every drop is counted (``stats()``).
Space recovery on a full disk lives in :mod:`edge.outbox.space`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Self, TypeVar

import aiosqlite

from protocols.wire import (
    MAX_PAYLOAD_BYTES,
    MAX_RECORDS_PER_BATCH,
    Priority,
    Record,
)

from . import schema, space
from .commit import run_committer
from .config import OutboxConfig
from .errors import ErrorReason, OutboxClosed, classify, wrap
from .inflight import InFlight
from .model import BATCH_HEAD_MAX, OutboxStats, StoredRecord
from .queue import AckRequest, AppendRequest, Queue, checked
from .store import Changes, Ledger, oldest_stored_ms, write_meta

__all__ = ["Outbox"]

T = TypeVar("T")
log = logging.getLogger(__name__)
_FIRE = Priority.FIRE
_PRIORITIES = tuple(Priority)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Outbox:
    """A durable, bounded, prioritised queue of records between the drivers and the uplink.

    Use ``async with Outbox(config) as outbox:`` or ``await Outbox.open(config)`` and
    ``await outbox.close()``. One outbox per database file (a lock file enforces it).
    ``clock_ms`` supplies wall-clock milliseconds for store times and age limits (tests
    move it).
    """

    def __init__(self, config: OutboxConfig, *, clock_ms: Callable[[], int] = wall_ms) -> None:
        self.config = config
        self._clock = clock_ms
        self._db: aiosqlite.Connection | None = None
        self._lock_fd: int | None = None
        self._db_lock = asyncio.Lock()
        self._queue = Queue(config)
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self._ledger = Ledger()
        self._errors: Counter[str] = Counter()
        self._inflight = InFlight()
        self._ready = asyncio.Event()
        self._stored = asyncio.Event()  # replaced at each commit that stores records
        wal_bytes = config.wal_autocheckpoint_pages * 4096  # SQLite's default page size
        self.disk = space.DiskGuard(config.path, config.reserve_bytes, wal_bytes)

    # -- lifetime ----------------------------------------------------------------------

    @classmethod
    async def open(cls, config: OutboxConfig, *, clock_ms: Callable[[], int] = wall_ms) -> Self:
        outbox = cls(config, clock_ms=clock_ms)
        await outbox._open()
        return outbox

    async def __aenter__(self) -> Self:
        if self._db is None:  # ``async with await Outbox.open(...)`` works too
            await self._open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _open(self) -> None:
        if self._db is not None or self._closing:
            raise OutboxClosed("an Outbox opens once")
        self._lock_fd = schema.acquire_lock(self.config.path)
        try:
            self._db, self._ledger = await schema.connect(self.config)
        except BaseException as e:
            os.close(self._lock_fd)
            self._lock_fd = None
            if isinstance(e, sqlite3.Error):
                self._errors[classify(e)] += 1
                raise wrap(e) from e
            raise
        await self.disk.ensure_reserve()
        self._update_ready()
        self._committer = asyncio.create_task(
            run_committer(self, self._queue), name=f"outbox {self.config.path}"
        )

    async def close(self) -> None:
        """Commit what is queued, stop the committer, close the database. Idempotent."""
        if self._closing or self._db is None:
            return
        self._closing = True
        self._queue.wake.set()
        self._queue.kick.set()
        self._queue.room.set()
        if self._committer is not None:
            await self._committer
        await self._db.close()
        self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def closing(self) -> bool:
        return self._closing

    def _require_open(self) -> aiosqlite.Connection:
        """The connection, for the public API: refused once closing has begun."""
        if self._closing:
            raise OutboxClosed("the outbox is closed")
        if self._committer is not None and self._committer.done():
            raise OutboxClosed("the outbox's committer stopped (see the log)")
        return self._conn()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise OutboxClosed("the outbox is not open")
        return self._db

    # -- the drivers' side -------------------------------------------------------------

    async def append(self, records: Iterable[Record]) -> list[Record]:
        """Store records; return them numbered once they are durable (fsynced).

        All records of one call commit in the same transaction. Records of calls awaited
        one after another are numbered in call order. Cancelling the caller does not
        withdraw the records. A record may be evicted later (or at once, when the caps are
        held by more important records); ``stats().evicted`` counts it. Raises
        :class:`OutboxFull` when the disk (or ``max_file_bytes``) has no room even after
        evicting every measurement: nothing of this call was stored.
        """
        return await asyncio.shield(self._enqueue(checked(records), waited=True))

    async def submit(self, records: Iterable[Record]) -> asyncio.Future[list[Record]]:
        """Queue records without waiting for their commit; the future resolves like
        :meth:`append` (numbered records once durable, or the error).

        For sources that need not wait for the fsync before going on (a Modbus poll, BLE
        advertisements): their next records can join the commit under way, so a flood is
        stored at the CPU's pace rather than the disk's; they share commits for up to
        ``submit_window_s`` unless an ``append`` or ack shortens the wait (fire alarms
        never wait). When ``max_queued_records`` are already queued this waits for room;
        records carrying a fire alarm never wait.
        Retrieve every future's result, or errors go unseen.
        """
        batch = checked(records)
        q = self._queue
        if not any(r.priority is _FIRE for r in batch):
            while q.records >= self.config.max_queued_records and not self._closing:
                await q.room.wait()
        return self._enqueue(batch, waited=False)

    def _enqueue(
        self, batch: tuple[Record, ...], *, waited: bool
    ) -> asyncio.Future[list[Record]]:
        self._require_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Record]] = loop.create_future()
        if not batch:
            future.set_result([])
            return future
        urgent = any(r.priority is _FIRE for r in batch)
        self._queue.put_append(AppendRequest(batch, future, loop.time(), urgent, waited))
        return future

    # -- the uplink's side -------------------------------------------------------------

    async def next_batch(
        self,
        max_records: int = MAX_RECORDS_PER_BATCH,
        max_bytes: int = MAX_PAYLOAD_BYTES - BATCH_HEAD_MAX,
    ) -> list[StoredRecord]:
        """Pending records to send, marked in flight until ``ack`` or ``nack``.

        Fire alarms first, then alarms, events, measurements; seq order within a class.
        A batch that starts with fire alarms carries only fire alarms, so they travel in a
        small message of their own. ``max_bytes`` bounds the records' encoded bytes plus
        the commas between them; a single record is returned even if it alone is larger.
        Empty when nothing is pending (see :meth:`wait_for_records`).
        """
        if max_records < 1 or max_bytes < 1:
            raise ValueError("max_records and max_bytes must be positive")
        db = self._require_open()
        async with self._db_lock, self._guard():
            out = await self._inflight.take(db, max_records, max_bytes)
        self._update_ready()
        return out

    async def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged records (after the broker's PUBACK); returns how many were
        still there. Committed with the next group, so an ack shares the appends' fsync."""
        self._require_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put_ack(AckRequest(frozenset(seqs), future, loop.time()))
        return await asyncio.shield(future)

    def nack(self, seqs: Iterable[int]) -> None:
        """Put in-flight records back to pending (the publish failed or timed out); they
        go out again with the same seqs. Unknown seqs are ignored."""
        self._inflight.release(seqs)
        self._update_ready()

    def release_all(self) -> int:
        """Put every in-flight record back to pending (on reconnect); returns how many."""
        n = self._inflight.release_all()
        self._update_ready()
        return n

    async def wait_for_records(self) -> None:
        """Return when ``next_batch`` has something to hand out."""
        await self._ready.wait()

    async def wait_stored(self, timeout: float | None = None) -> bool:
        """Wait until the next commit that stores records (or ``timeout`` seconds); whether
        one did. Lets the uplink fill a message without polling (``Forwarder`` linger)."""
        stored = self._stored
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await stored.wait()
        return stored.is_set()

    def _update_ready(self) -> None:
        if sum(self._ledger.depth) > len(self._inflight):
            self._ready.set()
        else:
            self._ready.clear()

    # -- housekeeping ------------------------------------------------------------------

    @property
    def queued_records(self) -> int:
        """Records given to ``append``/``submit`` and not yet committed."""
        return self._queue.records

    def depth(self, priority: Priority) -> int:
        """Records of one class stored and not yet acknowledged."""
        return self._ledger.depth[priority]

    @property
    def ledger(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(records, payload bytes) stored per class, as of the last commit."""
        return tuple(self._ledger.depth), tuple(self._ledger.nbytes)

    @property
    def next_seq(self) -> int:
        return self._ledger.next_seq

    @property
    def last_seq(self) -> int:
        """Highest seq committed so far (0: none)."""
        return self._ledger.next_seq - 1

    async def stats(self) -> OutboxStats:
        db = self._require_open()
        async with self._db_lock, self._guard():
            oldest = await oldest_stored_ms(db)
        age = None if oldest is None else max(0.0, (self._clock() - oldest) / 1000)
        return OutboxStats(
            depth={p: self._ledger.depth[p] for p in _PRIORITIES},
            payload_bytes=sum(self._ledger.nbytes),
            in_flight=len(self._inflight),
            oldest_age_s=age,
            evicted={p: self._ledger.evicted[p] for p in _PRIORITIES},
            expired={p: self._ledger.expired[p] for p in _PRIORITIES},
            errors=dict(self._errors),
            last_seq=self.last_seq,
            file_bytes=space.file_bytes(self.config.path),
            reserve_ok=self.disk.reserve_ok,
            disk_full=self.disk.pinned,
        )

    async def expire(self) -> dict[Priority, int]:
        """Drop records older than their class's ``max_age_s`` (runs periodically by itself).

        Oldest first by seq; the first record young enough ends a class's sweep, so after a
        backwards clock jump a few old records may outlive their limit for a while.
        """
        self._require_open()
        async with self._guard():
            return await space.expire(self, self._clock())

    # -- transactions ------------------------------------------------------------------

    async def transact(
        self, body: Callable[[aiosqlite.Connection, Changes], Awaitable[None]]
    ) -> Changes:
        """Run ``body`` in one write transaction; apply its changes after COMMIT.

        Raises sqlite3 errors as they are (the caller decides how to count and recover).
        """
        db = self._conn()  # also while closing: the committer drains the queue
        async with self._db_lock:
            changes = Changes()
            await db.execute("BEGIN IMMEDIATE")
            try:
                await body(db, changes)
                if changes.next_seq or changes.counters_changed:
                    await write_meta(db, self._ledger, changes)
                await db.execute("COMMIT")
            except BaseException:
                await _rollback(db)
                raise
            self._apply(changes)
        return changes

    async def with_connection(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` on the connection, outside any transaction, serialized with the rest."""
        db = self._conn()
        async with self._db_lock:
            return await fn(db)

    def _apply(self, changes: Changes) -> None:
        self._ledger.apply(changes)
        if changes.next_seq:
            self._stored.set()
            self._stored = asyncio.Event()
        for p, through in enumerate(changes.deleted_through):
            if through:
                self._inflight.forget_through(p, through)
        self._inflight.forget(changes.deleted)
        self._update_ready()

    def clock(self) -> int:
        return self._clock()

    def count_error(self, error: sqlite3.Error) -> ErrorReason:
        reason = classify(error)
        self._errors[reason] += 1
        log.warning("outbox %s: %s", self.config.path, error)
        return reason

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            self.count_error(e)
            raise wrap(e) from e

    def forget(self, seqs: Iterable[int]) -> None:
        """Acked seqs are no longer in flight, whether or not their rows were still there."""
        self._inflight.forget(seqs)
        self._update_ready()


async def _rollback(db: aiosqlite.Connection) -> None:
    # SQLite rolls back by itself after some errors (SQLITE_FULL among them).
    if db.in_transaction:
        try:
            await db.execute("ROLLBACK")
        except sqlite3.Error as e:
            log.error("outbox rollback failed: %s", e)
