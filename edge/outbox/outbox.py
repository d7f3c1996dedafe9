"""The power-safe outbox: every record the drivers produce is committed here before MQTT.

Life of a record::

    driver ──append()──▶ committer (group commit, seq assigned) ──▶ SQLite (WAL, FULL)
    uplink ◀─next_batch()── pending, by class then seq ◀─────────────────┘
    uplink ──mark_sent(seqs)──▶ sent: the broker's PUBACK came (state in memory)
    uplink ──confirm(epoch, ranges)──▶ deleted: the collector stored them
    nack(), requeue_unconfirmed(), resend() ──▶ pending again, same seqs
    ack(seqs) ──▶ deleted at the PUBACK (``delete_on = "puback"``)

``append`` returns only once the records are durable, with their seqs; that is when a
panel frame may be confirmed. Nothing is deleted before ``confirm`` (or ``ack``); a resend
reuses the seq, so the collector drops the duplicate. Full outbox, full disk and age limits
are handled by class, measurements first and fire alarms last, and every drop is counted
(``stats()``). The committer (:mod:`edge.outbox.commit`) and space recovery on a full disk
(:mod:`edge.outbox.space`) work on the outbox's :class:`~edge.outbox.core.Core`, not on
this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Self

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
from .core import Core
from .disk import file_bytes
from .errors import OutboxClosed, classify, wrap
from .model import BATCH_HEAD_MAX, OutboxStats, Resent, StoredRecord
from .queue import AckRequest, AppendRequest, Queue, checked
from .store import held_between, oldest_stored_ms

__all__ = ["Outbox"]

_FIRE = Priority.FIRE
_PRIORITIES = tuple(Priority)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Outbox:
    """A durable, bounded, prioritised queue of records between the drivers and the uplink.

    Use ``async with Outbox(config) as outbox:`` or ``await Outbox.open(config)`` and
    ``await outbox.close()``. One outbox per database file (a lock file enforces it).
    ``clock_ms`` supplies wall-clock milliseconds for store times and age limits,
    ``monotonic`` the seconds that confirmation waits are measured in (tests move them).
    """

    def __init__(self, config: OutboxConfig, *, clock_ms: Callable[[], int] = wall_ms,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._core = Core(config, clock_ms)
        self._monotonic = monotonic
        self._lock_fd: int | None = None
        self._queue = Queue(config)
        self._committer: asyncio.Task[None] | None = None

    # -- lifetime ----------------------------------------------------------------------

    @classmethod
    async def open(cls, config: OutboxConfig, *, clock_ms: Callable[[], int] = wall_ms,
                   monotonic: Callable[[], float] = time.monotonic) -> Self:
        outbox = cls(config, clock_ms=clock_ms, monotonic=monotonic)
        await outbox._open()
        return outbox

    async def __aenter__(self) -> Self:
        if self._core.db is None:  # ``async with await Outbox.open(...)`` works too
            await self._open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _open(self) -> None:
        core = self._core
        if core.db is not None or core.closing:
            raise OutboxClosed("an Outbox opens once")
        self._lock_fd = schema.acquire_lock(self.config.path)
        try:
            core.db, core.tally = await schema.connect(self.config)
        except BaseException as e:
            os.close(self._lock_fd)
            self._lock_fd = None
            if isinstance(e, sqlite3.Error):
                core.errors[classify(e)] += 1
                raise wrap(e) from e
            raise
        await core.disk.ensure_reserve()
        core.update_ready()
        self._committer = asyncio.create_task(
            run_committer(core, self._queue), name=f"outbox {self.config.path}"
        )

    async def close(self) -> None:
        """Commit what is queued, stop the committer, close the database. Idempotent."""
        core = self._core
        if core.closing or core.db is None:
            return
        core.closing = True
        self._queue.wake.set()
        self._queue.kick.set()
        self._queue.room.set()
        if self._committer is not None:
            await self._committer
        await core.db.close()
        core.db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def closing(self) -> bool:
        return self._core.closing

    def _require_open(self) -> aiosqlite.Connection:
        """The connection, for the public API: refused once closing has begun."""
        if self._core.closing:
            raise OutboxClosed("the outbox is closed")
        if self._committer is not None and self._committer.done():
            raise OutboxClosed("the outbox's committer stopped (see the log)")
        return self._core.conn()

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
            while q.records >= self.config.max_queued_records and not self._core.closing:
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
        """Pending records to send, marked in flight until ``mark_sent``, ``ack`` or
        ``nack``.

        Fire alarms first, then alarms, events, measurements; seq order within a class.
        A batch that starts with fire alarms carries only fire alarms, so they travel in a
        small message of their own. ``max_bytes`` bounds the records' encoded bytes plus
        the commas between them; a single record is returned even if it alone is larger.
        Empty when nothing is pending (see :meth:`wait_for_records`).
        """
        if max_records < 1 or max_bytes < 1:
            raise ValueError("max_records and max_bytes must be positive")
        db = self._require_open()
        core = self._core
        async with core.lock, core.guard():
            out = await core.inflight.take(db, max_records, max_bytes)
        core.update_ready()
        return out

    def mark_sent(self, seqs: Iterable[int]) -> int:
        """The broker acknowledged these in-flight records (distinct seqs, as in a
        message): they stay stored (and count for the caps) but are no longer pending,
        until :meth:`confirm` names them or :meth:`requeue_unconfirmed` puts them back. In
        memory only, no write: after a restart they are pending again (docs/outbox.md,
        "Sent, then confirmed"). Seqs that are not out (deleted meanwhile) are ignored;
        returns how many were marked."""
        return self._core.inflight.mark_sent(seqs, self._monotonic())

    async def confirm(self, epoch: int, ranges: Iterable[tuple[int, int]]) -> int:
        """A collector stored these seqs (``(first, last)`` ranges, inclusive): delete them,
        whatever their state (pending, in flight or sent); returns how many were deleted.

        Only for the outbox's own :attr:`epoch`: a confirmation of another epoch (an earlier
        store's) deletes nothing, is counted (``stats().foreign_confirms``) and returns 0.
        Committed with the next group, like ``ack``.
        """
        self._require_open()
        if epoch != self.epoch:
            self._core.foreign_confirms += 1
            return 0
        spans = tuple((first, last) for first, last in ranges if first <= last)
        if not spans:
            return 0
        return await self._delete(frozenset(), spans)

    async def ack(self, seqs: Iterable[int]) -> int:
        """Delete records by seq at once (``delete_on = "puback"``: after the broker's
        PUBACK); returns how many were still there. Committed with the next group, so an
        ack shares the appends' fsync."""
        self._require_open()
        return await self._delete(frozenset(seqs), ())

    async def _delete(self, seqs: frozenset[int], ranges: tuple[tuple[int, int], ...]) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put_ack(AckRequest(seqs, future, loop.time(), ranges))
        return await asyncio.shield(future)

    def nack(self, seqs: Iterable[int]) -> None:
        """Put records that are out back to pending (the publish failed or timed out); they
        go out again with the same seqs. Unknown seqs are ignored."""
        self._core.inflight.release(seqs)
        self._core.update_ready()

    def release_all(self) -> int:
        """Put every in-flight record back to pending (on reconnect: the old session's
        PUBACKs are gone); sent records keep waiting for their confirmation. Returns how
        many."""
        n = self._core.inflight.release_all()
        self._core.update_ready()
        return n

    def requeue_unconfirmed(self, older_than_s: float) -> int:
        """Sent records that have waited ``older_than_s`` or longer for their confirmation
        go back to pending and out again, in the usual order (fire alarms first); returns
        how many. The uplink calls it with its ``confirm_timeout_s``."""
        n = self._core.inflight.release_sent_before(self._monotonic() - older_than_s)
        if n:
            self._core.update_ready()
        return n

    async def resend(self, epoch: int, first: int, last: int) -> Resent:
        """Send seqs ``first..last`` again (the ``resend`` command): those still stored are
        pending again (if sent) or already on their way (pending, in flight), and the
        runs no longer stored are ``missing``. Another epoch: everything is missing.

        Reads the stored seqs of the range, so keep ranges modest (the uplink's command
        handler bounds them).
        """
        if not 1 <= first <= last:
            raise ValueError(f"need 1 <= first <= last, got {first}..{last}")
        db = self._require_open()
        if epoch != self.epoch:
            return Resent(0, ((first, last),))
        core = self._core
        async with core.lock, core.guard():
            held = await held_between(db, first, last)
        core.inflight.release_sent_between(first, last)
        core.update_ready()
        return Resent(len(held), _gaps(first, last, held))

    @property
    def sent_unconfirmed(self) -> int:
        """Records the broker acknowledged that wait for the collector's confirmation."""
        return self._core.inflight.sent

    async def wait_for_records(self) -> None:
        """Return when ``next_batch`` has something to hand out."""
        await self._core.ready.wait()

    async def wait_stored(self, timeout: float | None = None) -> bool:
        """Wait until the next commit that stores records (or ``timeout`` seconds); whether
        one did. Lets the uplink fill a message without polling (``Forwarder`` linger)."""
        stored = self._core.stored
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await stored.wait()
        return stored.is_set()

    # -- housekeeping ------------------------------------------------------------------

    @property
    def queued_records(self) -> int:
        """Records given to ``append``/``submit`` and not yet committed."""
        return self._queue.records

    def depth(self, priority: Priority) -> int:
        """Records of one class stored (pending, in flight and sent: not yet deleted), as of
        the last commit."""
        return self._core.tally.depth[priority]

    def pending(self, priority: Priority) -> int:
        """Records of one class waiting to be sent: stored, neither in flight nor sent."""
        return self._core.tally.depth[priority] - self._core.inflight.out(priority)

    @property
    def total_depth(self) -> int:
        """Records of all classes stored (pending, in flight and sent), as of the last
        commit; 0 once everything was delivered and confirmed. Not counting
        :attr:`queued_records`, which are not stored yet."""
        return sum(self._core.tally.depth)

    def payload_bytes(self, priority: Priority) -> int:
        """Stored payload bytes of one class's records, as of the last commit (what
        ``max_bytes`` caps, summed over the classes)."""
        return self._core.tally.nbytes[priority]

    @property
    def last_seq(self) -> int:
        """Highest seq committed so far (0: none)."""
        return self._core.tally.next_seq - 1

    @property
    def epoch(self) -> int:
        """The store's epoch: made with the database file, carried in every batch and health
        message (docs/wire-protocol.md, "Epochs"); 0 before the outbox is opened."""
        return self._core.tally.epoch

    async def stats(self) -> OutboxStats:
        db = self._require_open()
        core = self._core
        async with core.lock, core.guard():
            oldest = await oldest_stored_ms(db)
        age = None if oldest is None else max(0.0, (core.clock() - oldest) / 1000)
        tally = core.tally
        out = core.inflight
        sent_at = out.oldest_sent()
        return OutboxStats(
            depth={p: tally.depth[p] for p in _PRIORITIES},
            payload_bytes=sum(tally.nbytes),
            in_flight=out.in_flight,
            oldest_age_s=age,
            evicted={p: tally.evicted[p] for p in _PRIORITIES},
            expired={p: tally.expired[p] for p in _PRIORITIES},
            errors=dict(core.errors),
            last_seq=self.last_seq,
            epoch=self.epoch,
            file_bytes=file_bytes(self.config.path),
            reserve_ok=core.disk.reserve_ok,
            disk_full=core.disk.pinned,
            sent_unconfirmed=out.sent,
            oldest_unconfirmed_s=None if sent_at is None else self._monotonic() - sent_at,
            foreign_confirms=core.foreign_confirms,
        )

    async def expire(self) -> dict[Priority, int]:
        """Drop records older than their class's ``max_age_s`` (runs periodically by itself).

        Oldest first by seq; the first record young enough ends a class's sweep, so after a
        backwards clock jump a few old records may outlive their limit for a while.
        """
        self._require_open()
        async with self._core.guard():
            return await space.expire(self._core, self._core.clock())


def _gaps(first: int, last: int, held: list[int]) -> tuple[tuple[int, int], ...]:
    """The runs of ``first..last`` not in ``held`` (ascending, within the range)."""
    gaps: list[tuple[int, int]] = []
    expect = first
    for seq in held:
        if seq > expect:
            gaps.append((expect, seq - 1))
        expect = seq + 1
    if expect <= last:
        gaps.append((expect, last))
    return tuple(gaps)
