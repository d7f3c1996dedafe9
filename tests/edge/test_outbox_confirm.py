"""Sent, then confirmed: a record leaves the outbox when the collector says it stored it.

``mark_sent`` after the broker's PUBACK keeps it stored (and counted for the caps) but no
longer pending; ``confirm`` deletes by the collector's ranges, only of the outbox's own
epoch; ``requeue_unconfirmed`` puts records whose confirmation did not come back to pending,
fire alarms first; ``resend`` (the command) does so for a range and names what is gone.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.outbox import Outbox, Resent
from protocols.wire import Priority

from .helpers import T0, config, event, measurement, record

FIRE, ALARM, EVENT, MEAS = Priority


class Clock:
    """The monotonic seconds the outbox measures confirmation waits in, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stored(path: Path) -> list[int]:
    with sqlite3.connect(f"file:{path / 'outbox.db'}?mode=ro", uri=True) as db:
        return [s for (s,) in db.execute("SELECT seq FROM outbox ORDER BY seq")]


async def test_sent_records_stay_stored_until_confirmed(tmp_path: Path) -> None:
    clock = Clock()
    async with Outbox(config(tmp_path), monotonic=clock) as ob:
        await ob.append([measurement(i) for i in range(6)])
        batch = await ob.next_batch(max_records=4)
        assert ob.mark_sent(r.seq for r in batch) == 4
        clock.now += 7.5
        s = await ob.stats()
        assert (s.total_depth, s.in_flight, s.sent_unconfirmed, s.pending) == (6, 0, 4, 2)
        assert s.oldest_unconfirmed_s == 7.5
        assert ob.sent_unconfirmed == 4
        assert [r.seq for r in await ob.next_batch()] == [5, 6]  # sent ones are not pending
        assert await ob.next_batch() == []
        assert not ob._core.ready.is_set()

        # The collector stored 2..3 and 5 (in flight: confirmed while out is fine) and 9
        # (never stored here): exactly 2, 3 and 5 go.
        assert await ob.confirm(ob.epoch, [(2, 3), (5, 5), (9, 9)]) == 3
        assert stored(tmp_path) == [1, 4, 6]
        s = await ob.stats()
        assert (s.total_depth, s.in_flight, s.sent_unconfirmed) == (3, 1, 2)
        assert s.depth[MEAS] == 3
        assert await ob.confirm(ob.epoch, [(2, 3)]) == 0  # again: nothing left to delete
        assert ob.mark_sent([5, 6]) == 1  # 5 is gone; 6 was in flight
        assert await ob.confirm(ob.epoch, [(1, 6)]) == 3
        s = await ob.stats()
        assert (s.total_depth, s.sent_unconfirmed, s.oldest_unconfirmed_s) == (0, 0, None)


async def test_a_confirmation_of_another_epoch_deletes_nothing_and_is_counted(
        tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        await ob.append([measurement(i) for i in range(3)])
        ob.mark_sent(r.seq for r in await ob.next_batch())
        other = ob.epoch ^ 1
        assert await ob.confirm(other, [(1, 3)]) == 0
        assert await ob.confirm(0, [(1, 3)]) == 0  # a sender without an epoch
        s = await ob.stats()
        assert (s.total_depth, s.sent_unconfirmed, s.foreign_confirms) == (3, 3, 2)
        assert stored(tmp_path) == [1, 2, 3]


async def test_confirm_deletes_pending_records_too(tmp_path: Path) -> None:
    """After a restart nothing is marked sent, but a late confirmation still counts."""
    async with Outbox(config(tmp_path)) as ob:
        await ob.append([measurement(i) for i in range(4)])
        assert await ob.confirm(ob.epoch, [(2, 3)]) == 2
        assert [r.seq for r in await ob.next_batch()] == [1, 4]


async def test_unconfirmed_records_go_out_again_after_the_timeout_fire_alarms_first(
        tmp_path: Path) -> None:
    clock = Clock()
    async with Outbox(config(tmp_path), monotonic=clock) as ob:
        for i, p in enumerate([MEAS, ALARM, MEAS, EVENT]):
            await ob.append([record(p, i)])
        first = await ob.next_batch()
        assert [r.seq for r in first] == [2, 4, 1, 3]
        ob.mark_sent([2, 1])
        clock.now += 30
        ob.mark_sent([4, 3])
        [fire] = await ob.append([event(FIRE, 9)])
        assert [r.seq for r in await ob.next_batch()] == [fire.seq]
        ob.mark_sent([fire.seq])
        clock.now += 20
        assert ob.requeue_unconfirmed(60) == 0  # 2 and 1 have waited 50 s
        clock.now += 10
        assert ob.requeue_unconfirmed(60) == 2
        assert ob._core.ready.is_set()
        assert [r.seq for r in await ob.next_batch()] == [2, 1]
        clock.now += 30
        assert ob.requeue_unconfirmed(60) == 3  # 4 and 3 (60 s), the fire alarm (60 s)
        assert [r.seq for r in await ob.next_batch()] == [fire.seq]  # fire first, alone
        assert [r.seq for r in await ob.next_batch()] == [4, 3]
        # Sent again, a record waits from its new PUBACK on.
        ob.mark_sent([2, 1])
        clock.now += 59
        assert ob.requeue_unconfirmed(60) == 0
        assert (await ob.stats()).sent_unconfirmed == 2


async def test_a_reconnect_releases_records_in_flight_but_not_sent_ones(
        tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        await ob.append([measurement(i) for i in range(4)])
        batch = await ob.next_batch(max_records=2)
        ob.mark_sent(r.seq for r in batch)
        assert [r.seq for r in await ob.next_batch()] == [3, 4]
        assert ob.release_all() == 2
        assert [r.seq for r in await ob.next_batch()] == [3, 4]
        ob.nack([3, 4])
        s = await ob.stats()
        assert (s.in_flight, s.sent_unconfirmed, s.pending) == (0, 2, 2)


async def test_after_a_restart_sent_records_are_pending(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        await ob.append([measurement(i) for i in range(3)])
        ob.mark_sent(r.seq for r in await ob.next_batch())
        assert await ob.next_batch() == []
    async with Outbox(config(tmp_path)) as ob:
        s = await ob.stats()
        assert (s.sent_unconfirmed, s.pending) == (0, 3)
        assert [r.seq for r in await ob.next_batch()] == [1, 2, 3]


async def test_sent_records_count_for_the_caps_and_are_evicted_like_any(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path, max_rows=4)) as ob:
        await ob.append([measurement(i) for i in range(4)])
        ob.mark_sent(r.seq for r in await ob.next_batch(max_records=3))
        await ob.append([event(ALARM, 1), event(ALARM, 2)])  # the two oldest readings go
        s = await ob.stats()
        assert s.total_depth == 4 and s.evicted[MEAS] == 2
        assert s.sent_unconfirmed == 1  # 3 is still sent; 1 and 2 were evicted
        assert stored(tmp_path) == [3, 4, 5, 6]
        assert await ob.confirm(ob.epoch, [(1, 3)]) == 1


async def test_resend_queues_held_seqs_and_names_the_missing(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        await ob.append([measurement(i) for i in range(10)])
        ob.mark_sent(r.seq for r in await ob.next_batch(max_records=8))
        await ob.confirm(ob.epoch, [(2, 3), (7, 7)])
        assert [r.seq for r in await ob.next_batch(max_records=1)] == [9]  # in flight
        got = await ob.resend(ob.epoch, 1, 12)
        # 1, 4-6, 8 were sent: pending again; 9 in flight, 10 pending: on their way.
        assert got == Resent(7, ((2, 3), (7, 7), (11, 12)))
        assert [r.seq for r in await ob.next_batch()] == [1, 4, 5, 6, 8, 10]
        assert (await ob.stats()).sent_unconfirmed == 0
        assert await ob.resend(ob.epoch, 2, 3) == Resent(0, ((2, 3),))
        assert await ob.resend(ob.epoch, 4, 4) == Resent(1, ())
        assert await ob.resend(ob.epoch ^ 1, 1, 5) == Resent(0, ((1, 5),))
        with pytest.raises(ValueError, match="first <= last"):
            await ob.resend(ob.epoch, 5, 4)


async def test_the_wait_is_measured_from_the_puback_not_from_the_store(tmp_path: Path) -> None:
    now = [T0]
    clock = Clock()
    async with Outbox(config(tmp_path), clock_ms=lambda: now[0], monotonic=clock) as ob:
        await ob.append([measurement()])
        now[0] += 3_600_000
        clock.now += 3600  # an hour stored before it could be sent
        ob.mark_sent(r.seq for r in await ob.next_batch())
        assert ob.requeue_unconfirmed(60) == 0
        s = await ob.stats()
        assert s.oldest_age_s == 3600.0 and s.oldest_unconfirmed_s == 0.0


async def test_health_and_the_status_snapshot_show_records_awaiting_confirmation(
        tmp_path: Path) -> None:
    from edge.app import outbox_snapshot
    from edge.drivers.base import LinkBoard
    from edge.health import HealthProbe
    from protocols.wire import decode_health, encode_health

    clock = Clock()
    async with Outbox(config(tmp_path), monotonic=clock) as ob:
        await ob.append([measurement(i) for i in range(5)])
        ob.mark_sent(r.seq for r in await ob.next_batch(max_records=3))
        clock.now += 42.5
        await ob.confirm(ob.epoch ^ 1, [(1, 5)])
        probe = HealthProbe("gw-test", ob, tmp_path, counters=dict, links=LinkBoard())
        health = decode_health(encode_health(await probe.health()))  # as the cloud sees it
        assert health.outbox_depth == 5  # sent records are still stored
        assert health.counters["outbox"] == {"sent_unconfirmed": 3, "unconfirmed_oldest_s": 42,
                                             "foreign_confirms": 1}
        snap = outbox_snapshot(await ob.stats())  # what `firegate status` shows
        assert (snap["sent_unconfirmed"], snap["oldest_unconfirmed_s"], snap["in_flight"]) == \
            (3, 42.5, 0)
        assert snap["foreign_confirms"] == 1
        await ob.confirm(ob.epoch, [(1, 5)])
        health = await probe.health()
        assert health.counters["outbox"] == {"foreign_confirms": 1}  # nothing awaits now
