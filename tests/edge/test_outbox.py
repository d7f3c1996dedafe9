"""Outbox basics: numbering, durability across reopen, send order, in-flight, acks."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from edge.outbox import Outbox, OutboxClosed, OutboxLocked, StoredRecord
from protocols.wire import (
    Priority,
    decode_batch,
    encode_batch_from_encoded,
    encode_record,
)

from .helpers import T0, config, event, measurement, record

WAIT = 20.0  # a generous deadline for a loaded machine; never a timing assertion


def without_suspending(coro):  # type: ignore[no-untyped-def]
    """Run ``coro`` to its end and return its result; fail if it ever waited (suspended).

    "Never waits" is then a fact about the code path, not a duration measured on a machine
    that may be busy."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("it waited")


async def ran_until_suspended(task: asyncio.Task) -> None:  # type: ignore[type-arg]
    """Let ``task`` (just created) run its first step: the loop runs ready callbacks in
    order, so after one turn it has either finished or suspended on what it awaits."""
    await asyncio.sleep(0)


class CommitCounter:
    """Counts the outbox's transactions (each one commit, one fsync) from now on."""

    def __init__(self, ob: Outbox) -> None:
        self.n = 0
        core = ob._core  # every write transaction goes through Core.transact
        original = core.transact

        async def counting(body):  # type: ignore[no-untyped-def]
            self.n += 1
            return await original(body)

        core.transact = counting  # type: ignore[method-assign]

FIRE, ALARM, EVENT, MEAS = Priority


async def test_seqs_start_at_1_and_come_back_numbered(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        out = await ob.append([measurement(1), event(ALARM, 2)])
        assert [r.seq for r in out] == [1, 2]
        assert out[0] == measurement(1).with_seq(1)
        assert ob.last_seq == 2
        assert await ob.append([]) == []


async def test_stored_bytes_are_encode_record_output(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        numbered = await ob.append([event(FIRE), measurement()])
        batch = await ob.next_batch()
        batch += await ob.next_batch()
    assert {r.seq: r.encoded for r in batch} == {r.seq: encode_record(r) for r in numbered}
    payload = encode_batch_from_encoded("gw-1", None, T0, [r.encoded for r in batch])
    assert list(decode_batch(payload).records) == sorted(numbered, key=lambda r: r.priority)


async def test_records_and_seqs_survive_reopen_and_seqs_are_never_reused(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        await ob.append([measurement(i) for i in range(5)])
        assert await ob.ack([4, 5]) == 2  # the highest seqs are gone from the table
    async with Outbox(config(tmp_path)) as ob:
        assert ob.last_seq == 5
        assert [r.seq for r in await ob.next_batch()] == [1, 2, 3]
        assert [r.seq for r in await ob.append([measurement()])] == [6]
        await ob.ack([1, 2, 3, 6])  # empty table
    async with Outbox(config(tmp_path)) as ob:
        assert [r.seq for r in await ob.append([measurement()])] == [7]


async def test_send_order_is_class_then_seq_and_fire_travels_alone(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        for i, p in enumerate([MEAS, EVENT, FIRE, ALARM, MEAS, FIRE, ALARM, EVENT]):
            await ob.append([record(p, i)])
        first = await ob.next_batch()
        assert [(r.priority, r.seq) for r in first] == [(FIRE, 3), (FIRE, 6)]
        rest = await ob.next_batch()
        assert [r.seq for r in rest] == [4, 7, 2, 8, 1, 5]
        assert await ob.next_batch() == []


async def test_limits_by_count_and_bytes(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        await ob.append([measurement(i) for i in range(10)])
        size = len(encode_record(measurement(0).with_seq(1)))
        assert [r.seq for r in await ob.next_batch(max_records=3)] == [1, 2, 3]
        # two records and one comma fit; a third would not
        two = await ob.next_batch(max_bytes=2 * size + 1 + size)
        assert [r.seq for r in two] == [4, 5]
        # a record larger than the budget still goes out alone rather than never
        assert [r.seq for r in await ob.next_batch(max_bytes=10)] == [6]


async def test_in_flight_rows_are_not_handed_out_twice_until_released(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        await ob.append([record(p, i) for i, p in enumerate([ALARM, MEAS, MEAS, ALARM])])
        a = await ob.next_batch(max_records=2)
        assert [r.seq for r in a] == [1, 4]
        b = await ob.next_batch()
        assert [r.seq for r in b] == [2, 3]
        assert await ob.next_batch() == []
        ob.nack([4, 3, 99])
        assert [r.seq for r in await ob.next_batch()] == [4, 3]
        assert ob.release_all() == 4
        again = await ob.next_batch()
        assert [r.seq for r in again] == [1, 4, 2, 3]
        assert (await ob.stats()).in_flight == 4


async def test_ack_deletes_only_what_it_names_and_is_idempotent(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        await ob.append([measurement(i) for i in range(4)])
        batch = await ob.next_batch(max_records=2)
        assert await ob.ack(r.seq for r in batch) == 2
        assert await ob.ack([1, 2, 1000]) == 0
        # an ack for a record that is not in flight (a late PUBACK after a reconnect)
        assert await ob.ack([4]) == 1
        assert [r.seq for r in await ob.next_batch()] == [3]
        s = await ob.stats()
        assert s.total_depth == 1 and s.in_flight == 1


async def test_new_records_after_a_drained_class_are_found(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        await ob.append([measurement(1)])
        assert len(await ob.next_batch()) == 1
        await ob.append([measurement(2), event(ALARM)])
        assert [r.seq for r in await ob.next_batch()] == [3, 2]


async def test_wait_for_records(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        waiter = asyncio.create_task(ob.wait_for_records())
        await ran_until_suspended(waiter)
        assert not waiter.done()  # an empty outbox: it waits ...
        await ob.append([measurement()])
        await asyncio.wait_for(waiter, WAIT)  # ... until a record arrives
        batch = await ob.next_batch()
        assert not ob._core.ready.is_set()
        ob.nack([batch[0].seq])
        await asyncio.wait_for(ob.wait_for_records(), WAIT)


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path, commit_window_s=0.05)) as ob:
        commits = CommitCounter(ob)
        results = await asyncio.gather(*(ob.append([measurement(i)]) for i in range(200)))
        seqs = sorted(r[0].seq for r in results)
        assert seqs == list(range(1, 201))
        assert commits.n <= 3, commits.n


async def test_a_fire_alarm_does_not_wait_for_the_commit_window(tmp_path: Path) -> None:
    """Behaviour only; how fast is bench/bench_outbox.py's "fire alarm append->durable"."""
    async with Outbox(config(tmp_path, commit_window_s=1.0)) as ob:
        await ob.append([measurement()])  # warm up: opening costs are not the point
        commits = CommitCounter(ob)
        slow = asyncio.create_task(ob.append([measurement(1)]))
        await ran_until_suspended(slow)
        assert len(ob._queue.appends) == 1  # queued first, its 1 s window running
        fire = await asyncio.wait_for(ob.append([event(FIRE)]), WAIT)
        # The fire alarm went in a transaction of its own (the measurement queued before it
        # still waits: committing it needs another round trip to the database thread) ...
        assert not slow.done() and commits.n == 1
        # ... and was numbered first although it was queued second.
        assert (await asyncio.wait_for(slow, WAIT))[0].seq > fire[0].seq
        assert commits.n == 2


async def test_submit_queues_without_waiting_for_the_commit(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path, commit_window_s=0.2)) as ob:
        first = await ob.submit([measurement(1)])
        second = await ob.submit([measurement(2)])
        assert not first.done()  # queued, not yet committed
        assert [r.seq for r in await second] == [2]
        assert [r.seq for r in await first] == [1]
        assert (await ob.submit([])).result() == []


async def test_submit_waits_for_room_but_a_fire_alarm_never_does(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path, commit_window_s=0.3, max_queued_records=3)) as ob:
        queued = await ob.submit([measurement(i) for i in range(3)])
        blocked = asyncio.create_task(ob.submit([measurement(3)]))
        await ran_until_suspended(blocked)
        assert not blocked.done()  # the queue is full until the committer takes it
        fire = without_suspending(ob.submit([event(FIRE)]))  # a fire alarm never waits
        assert [r.seq for r in await fire] == [1]  # and it jumps the queue
        assert len(await queued) == 3
        # the positive control: the blocked one was waiting for room, and gets it
        assert [r.seq for r in await (await asyncio.wait_for(blocked, WAIT))] == [5]


async def test_submitted_records_wait_for_company_until_someone_waits(tmp_path: Path) -> None:
    """Nobody awaits a submitted reading's fsync, so it waits up to ``submit_window_s`` to
    share a commit; an ``append`` (a caller waiting) or an ack ends that wait at once, and
    everything queued goes in the same transaction."""
    async with Outbox(config(tmp_path, submit_window_s=5.0)) as ob:
        await ob.append([measurement()])  # warm up
        commits = CommitCounter(ob)
        loop = asyncio.get_running_loop()
        window_ends = loop.time() + 5.0  # of the first submitted record, so of all of them
        queued = [await ob.submit([measurement(i)]) for i in range(1, 41)]
        # A quiet period, then the positive control below on the same outbox: the append
        # commits them all, so "not done" here meant "waiting", not "lost".
        await asyncio.sleep(0.3)
        assert not any(f.done() for f in queued)  # within their 5 s window
        assert commits.n == 0
        [fault] = await asyncio.wait_for(ob.append([event(ALARM, 1)]), WAIT)
        # The append did not sit out the window: the bound is the window itself (what the
        # promise is about), not a guess at how fast this machine is.
        assert loop.time() < window_ends
        assert [f.result()[0].seq for f in queued] == list(range(2, 42))
        assert fault.seq == 42
        assert commits.n == 1  # one transaction, one fsync for all 41 records

        window_ends = loop.time() + 5.0
        later = await ob.submit([measurement(50)])
        await asyncio.sleep(0.2)
        assert not later.done()
        assert await ob.ack([1]) == 1  # an ack is awaited by the uplink: it cuts the wait too
        assert loop.time() < window_ends
        assert later.done() and later.result()[0].seq == 43
        assert commits.n == 2


async def test_submitted_records_alone_commit_when_their_window_ends(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path, submit_window_s=0.4)) as ob:
        t = time.perf_counter()
        future = await ob.submit([measurement(1)])
        [r] = await asyncio.wait_for(future, WAIT)
        assert r.seq == 1
        # it did wait for company: a lower bound, which a busy machine can only help
        assert time.perf_counter() - t >= 0.35


async def test_append_refuses_numbered_and_foreign_records(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        with pytest.raises(ValueError, match="already numbered"):
            await ob.append([measurement().with_seq(5)])
        with pytest.raises(TypeError):
            await ob.append(["not a record"])  # type: ignore[list-item]
        assert ob.last_seq == 0


async def test_one_outbox_per_file(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)):
        with pytest.raises(OutboxLocked):
            await Outbox.open(config(tmp_path))
    ob = await Outbox.open(config(tmp_path))  # released on close
    await ob.close()
    await ob.close()  # idempotent
    with pytest.raises(OutboxClosed):
        await ob.append([measurement()])


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    ob = await Outbox.open(config(tmp_path, commit_window_s=1.0))
    pending = asyncio.create_task(ob.append([measurement()]))
    await asyncio.sleep(0.01)
    await ob.close()
    assert [r.seq for r in pending.result()] == [1]


async def test_stats(tmp_path: Path) -> None:
    now = [T0]
    async with Outbox(config(tmp_path), clock_ms=lambda: now[0]) as ob:
        s = await ob.stats()
        assert s.total_depth == 0 and s.oldest_age_s is None and s.last_seq == 0
        await ob.append([measurement(), event(FIRE)])
        now[0] += 2500
        await ob.append([event(ALARM)])
        s = await ob.stats()
        assert s.depth == {FIRE: 1, ALARM: 1, EVENT: 0, MEAS: 1}
        assert s.oldest_age_s == 2.5
        assert s.payload_bytes == sum(len(r.encoded) for r in await _all(ob))
        assert s.file_bytes > 0 and s.reserve_ok and s.errors == {}
        assert s.evicted_by_label() == {"fire": 0, "alarm": 0, "event": 0, "measurement": 0}


async def test_database_is_wal_with_synchronous_full(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        db = ob._core.conn()
        assert (await (await db.execute("PRAGMA journal_mode")).fetchone()) == ("wal",)
        assert (await (await db.execute("PRAGMA synchronous")).fetchone()) == (2,)  # FULL
        await ob.append([measurement()])
    with sqlite3.connect(tmp_path / "outbox.db") as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def _all(ob: Outbox) -> list[StoredRecord]:
    out: list[StoredRecord] = []
    while batch := await ob.next_batch():
        out += batch
    ob.release_all()
    return out
