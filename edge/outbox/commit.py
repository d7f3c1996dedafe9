"""Group commit: many appends (and acks) in one transaction, one fsync for all of them.

Why: with ``synchronous=FULL`` every commit costs an fsync (0.5-5 ms on the shared reference
VM, tens of ms on an SD card), so one fsync per record would cap the outbox at a few hundred
to a few thousand records a second. Instead appends queue (:mod:`edge.outbox.queue`) and
this single committer task takes what has arrived - at most ``max_group_records`` - into
one transaction. An append waits at most ``commit_window_s`` for company, submitted records
(nobody awaits their fsync) at most ``submit_window_s``; an append carrying a fire alarm
never waits: it wakes the committer and is committed in a small
transaction of its own (GB 26875.1 §4.1.2.3: fire alarms pre-empt everything else).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from functools import partial

import aiosqlite

from protocols.wire import Record, encode_record

from . import space
from .config import OutboxConfig
from .core import Core
from .errors import ErrorReason, OutboxError, OutboxFull, wrap
from .queue import AckRequest, AppendRequest, Queue
from .store import Changes, Row, delete_ranges, delete_seqs, evict_oldest, held_between, insert

__all__ = ["commit_group", "fit_caps", "run_committer"]

log = logging.getLogger(__name__)
FULL_RETRIES = 3
_ACK_CHUNK = 64


def number(
    appends: Sequence[AppendRequest], next_seq: int, now_ms: int
) -> tuple[list[list[Record]], list[Row], int]:
    """Seqs and stored bytes for a group, before its transaction opens (CPU work that need
    not hold the database). Only the committer assigns seqs, so ``next_seq`` cannot move
    meanwhile; if the transaction fails, these numbers are simply never used."""
    numbered: list[list[Record]] = []
    rows: list[Row] = []
    seq = next_seq
    for request in appends:
        out = []
        for record in request.records:
            r = record.with_seq(seq)
            out.append(r)
            rows.append((seq, r.priority.value, now_ms, encode_record(r)))
            seq += 1
        numbered.append(out)
    return numbered, rows, seq


async def fit_caps(
    db: aiosqlite.Connection,
    config: OutboxConfig,
    depth: Sequence[int],
    nbytes: Sequence[int],
    rows: list[Row],
    changes: Changes,
) -> list[Row]:
    """Evict until the stored set plus ``rows`` fits ``max_bytes`` and ``max_rows``.

    The outbox keeps the most valuable records: by class first, then the newest. So per
    class from measurements up to fire alarms, stored rows go oldest first, and only then
    incoming rows of that class (they are newer). An incoming measurement meeting an outbox
    full of alarms is therefore dropped on arrival - counted as evicted like any other.
    Returns the rows still to insert.
    """
    stored_rows = sum(depth) + sum(changes.depth)
    stored_bytes = sum(nbytes) + sum(changes.nbytes)
    over_rows = stored_rows + len(rows) - config.max_rows if config.max_rows else 0
    over_bytes = stored_bytes + sum(len(r[3]) for r in rows) - config.max_bytes
    if over_rows <= 0 and over_bytes <= 0:
        return rows

    def take(size: int, _stored_ms: int) -> bool:
        nonlocal over_rows, over_bytes
        if over_rows <= 0 and over_bytes <= 0:
            return False
        over_rows -= 1
        over_bytes -= size
        return True

    dropped: set[int] = set()
    for priority in reversed(range(4)):
        if depth[priority] + changes.depth[priority] > 0:
            count, _ = await evict_oldest(db, priority, take, changes)
            changes.evicted[priority] += count
        for row in rows:
            if row[1] == priority and take(len(row[3]), 0):
                dropped.add(row[0])
                changes.evicted[priority] += 1
        if over_rows <= 0 and over_bytes <= 0:
            break
    return [r for r in rows if r[0] not in dropped] if dropped else rows


async def commit_group(
    core: Core, appends: list[AppendRequest], acks: list[AckRequest]
) -> None:
    """One transaction for a group; resolves its futures on success, raises sqlite3 errors
    (with nothing changed) otherwise."""
    tally = core.tally
    numbered, rows, next_seq = number(appends, tally.next_seq, core.clock())
    ack_seqs: frozenset[int] = frozenset().union(*(a.seqs for a in acks))
    ranges = [r for a in acks for r in a.ranges]
    by_range: list[int] = []

    async def body(db: aiosqlite.Connection, changes: Changes) -> None:
        nonlocal by_range
        if ack_seqs:
            await delete_seqs(db, ack_seqs, changes)
        if ranges:
            by_range = await delete_ranges(db, ranges, changes)
        if rows:
            # The tally changes only after COMMIT: it is the state this body started from.
            kept = await fit_caps(db, core.config, tally.depth, tally.nbytes, rows, changes)
            await insert(db, kept)
            for _seq, priority, _ms, payload in kept:
                changes.add(priority, len(payload))
            changes.next_seq = next_seq

    changes = await core.transact(body)
    core.forget(ack_seqs)
    for request, records in zip(appends, numbered, strict=True):
        if not request.future.done():
            request.future.set_result(records)
    for ack in acks:
        if not ack.future.done():
            ack.future.set_result(_deleted_of(ack, changes.deleted, by_range))


def _deleted_of(ack: AckRequest, deleted: set[int], by_range: list[int]) -> int:
    """How many of one request's seqs a transaction deleted: of its ``seqs``, and of its
    ``ranges`` (``by_range`` sorted; a seq two requests named counts for both)."""
    n = len(ack.seqs & deleted)
    for first, last in ack.ranges:
        n += bisect_right(by_range, last) - bisect_left(by_range, first)
    return n


async def commit_with_recovery(
    core: Core, appends: list[AppendRequest], acks: list[AckRequest]
) -> OutboxError | None:
    """Commit a group, making room on SQLITE_FULL; the typed error if it cannot."""
    wanted = sum(len(a.records) for a in appends)
    error: OutboxError | None = None
    for attempt in range(FULL_RETRIES + 1):
        try:
            await commit_group(core, appends, acks)
            return None
        except sqlite3.Error as e:
            reason = core.count_error(e)
            error = wrap(e)
            if reason is not ErrorReason.FULL or attempt == FULL_RETRIES:
                break
            if not await space.make_space(core, attempt, wanted):
                break
    if isinstance(error, OutboxFull):
        return OutboxFull(f"no room for {wanted} records, measurements evicted ({error})")
    return error


async def run_committer(core: Core, q: Queue) -> None:
    """The single writer of appends and acks; returns once closing and drained."""
    config = core.config
    loop = asyncio.get_running_loop()
    next_maintenance = loop.time() + config.maintenance_interval_s
    while True:
        if not q:
            if core.closing:
                return
            q.wake.clear()
            await _wait(q.wake, next_maintenance - loop.time())
        else:
            delay = q.due() - loop.time()
            if delay > 0 and not (
                core.closing or q.urgent() or q.records >= config.max_group_records
            ):
                q.kick.clear()
                if await _wait(q.kick, delay):
                    continue  # something changed the deadline: look again
            await _flush(core, *q.take())
        if loop.time() >= next_maintenance and not core.closing:
            try:
                await space.maintain(core)
            except Exception:  # a bug: the committer must outlive it, or appends hang
                log.exception("outbox maintenance")
            next_maintenance = loop.time() + config.maintenance_interval_s


async def _flush(
    core: Core, appends: list[AppendRequest], acks: list[AckRequest], *, split: bool = True
) -> None:
    error: Exception | None
    try:
        error = await commit_with_recovery(core, appends, acks)
    except Exception as e:  # a bug, not storage: tell the waiting callers, keep running
        log.exception("outbox committer")
        error = e
    if error is None:
        return
    if split and isinstance(error, OutboxFull) and (acks or len(appends) > 1):
        # Smaller transactions may still fit: the acks first (they free space), then
        # each append, fire alarms first.
        if acks:
            await _ack_in_chunks(core, acks)
        for a in sorted(appends, key=lambda a: not a.urgent):
            await _flush(core, [a], [], split=False)
        return
    requests: list[AppendRequest | AckRequest] = [*appends, *acks]
    for request in requests:
        if not request.future.done():
            request.future.set_exception(error)


async def _ack_in_chunks(core: Core, acks: list[AckRequest]) -> None:
    """Deletes on a full disk: a transaction must fit in the WAL file as it is (it cannot
    grow), so delete a few rows at a time with a checkpoint in between. Ranges are first
    resolved to the seqs stored in them (a read needs no room)."""
    wanted: set[int] = set().union(*(a.seqs for a in acks))
    deleted: set[int] = set()
    try:
        for first, last in (r for a in acks for r in a.ranges):
            wanted.update(await core.with_connection(partial(held_between, first=first,
                                                             last=last)))
        seqs = sorted(wanted)
        for i in range(0, len(seqs), _ACK_CHUNK):
            chunk = seqs[i : i + _ACK_CHUNK]

            async def body(
                db: aiosqlite.Connection, changes: Changes, c: list[int] = chunk
            ) -> None:
                await delete_seqs(db, c, changes)

            deleted |= (await core.transact(body)).deleted
            core.forget(chunk)
            await space.checkpoint(core)
    except sqlite3.Error as e:
        core.count_error(e)
        for ack in acks:
            if not ack.future.done():
                ack.future.set_exception(wrap(e))
        return
    by_range = sorted(deleted)
    for ack in acks:
        if not ack.future.done():
            ack.future.set_result(_deleted_of(ack, deleted, by_range))


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; whether it was set."""
    if timeout <= 0:
        return event.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()
