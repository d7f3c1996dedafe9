"""Bounded outbox: caps evict by class (measurements first, fire alarms last), age limits
expire, and every drop is counted and survives a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.outbox import Outbox
from protocols.wire import Priority, encode_record

from .helpers import T0, config, measurement, record

FIRE, ALARM, EVENT, MEAS = Priority
MEAS_BYTES = len(encode_record(measurement().with_seq(1)))
EVENT_BYTES = {p: len(encode_record(record(p).with_seq(1))) for p in Priority}


async def remaining(ob: Outbox) -> list[int]:
    seqs: list[int] = []
    while batch := await ob.next_batch():
        seqs += [r.seq for r in batch]
    ob.release_all()
    return sorted(seqs)


async def test_row_cap_evicts_measurements_oldest_first_then_events_then_alarms(
    tmp_path: Path,
) -> None:
    async with Outbox(config(tmp_path, max_rows=6)) as ob:
        # seqs: 1 M, 2 F, 3 A, 4 E, 5 M, 6 A
        for i, p in enumerate([MEAS, FIRE, ALARM, EVENT, MEAS, ALARM]):
            await ob.append([record(p, i)])
        await ob.append([record(ALARM, 7)])  # 7: evicts measurement 1
        assert await remaining(ob) == [2, 3, 4, 5, 6, 7]
        await ob.append([record(FIRE, 8), record(FIRE, 9)])  # evicts measurement 5, event 4
        assert await remaining(ob) == [2, 3, 6, 7, 8, 9]
        await ob.append([record(FIRE, 10)])  # evicts the oldest alarm, 3
        assert await remaining(ob) == [2, 6, 7, 8, 9, 10]
        s = await ob.stats()
        assert s.evicted == {FIRE: 0, ALARM: 1, EVENT: 1, MEAS: 2}
        assert s.total_depth == 6


async def test_fire_alarms_are_evicted_last_and_oldest_first(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path, max_rows=3)) as ob:
        await ob.append([record(FIRE, i) for i in range(3)])
        await ob.append([record(FIRE, 3)])
        assert await remaining(ob) == [2, 3, 4]
        assert (await ob.stats()).evicted[FIRE] == 1


async def test_an_incoming_measurement_meeting_a_full_alarm_outbox_is_dropped(
    tmp_path: Path,
) -> None:
    async with Outbox(config(tmp_path, max_rows=2)) as ob:
        await ob.append([record(ALARM, 0), record(ALARM, 1)])
        out = await ob.append([measurement(2)])
        assert [r.seq for r in out] == [3]  # numbered: the collector will see the gap
        assert await remaining(ob) == [1, 2]
        assert (await ob.stats()).evicted[MEAS] == 1
        assert ob.last_seq == 3


async def test_byte_cap_counts_payload_bytes(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path, max_bytes=5 * MEAS_BYTES)) as ob:
        await ob.append([measurement(i) for i in range(5)])
        assert (await ob.stats()).payload_bytes == 5 * MEAS_BYTES
        await ob.append([measurement(5)])
        assert await remaining(ob) == [2, 3, 4, 5, 6]
        # an alarm is bigger than a measurement: two measurements make room for it
        await ob.append([record(ALARM, 6)])
        assert await remaining(ob) == [4, 5, 6, 7]
        s = await ob.stats()
        assert s.payload_bytes == 3 * MEAS_BYTES + EVENT_BYTES[ALARM] <= 5 * MEAS_BYTES
        assert s.evicted[MEAS] == 3


async def test_a_group_larger_than_the_cap_keeps_its_most_important_records(
    tmp_path: Path,
) -> None:
    async with Outbox(config(tmp_path, max_rows=3)) as ob:
        await ob.append([measurement(0)])
        out = await ob.append([record(p, i) for i, p in enumerate([MEAS, FIRE, MEAS, ALARM])])
        assert [r.seq for r in out] == [2, 3, 4, 5]
        assert await remaining(ob) == [3, 4, 5]  # the fire, the newest measurement, the alarm


async def test_evicting_an_in_flight_record_forgets_it(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path, max_rows=2)) as ob:
        await ob.append([measurement(0), measurement(1)])
        batch = await ob.next_batch()
        await ob.append([record(ALARM, 2)])  # evicts seq 1, which is in flight
        s = await ob.stats()
        assert s.in_flight == 1 and s.total_depth == 2
        assert await ob.ack(r.seq for r in batch) == 1  # only seq 2 was still there
        assert [r.seq for r in await ob.next_batch()] == [3]


async def test_eviction_counters_survive_a_restart(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path, max_rows=1)) as ob:
        await ob.append([record(EVENT, 0)])
        await ob.append([record(ALARM, 1)])
        await ob.append([measurement(2)])
    async with Outbox(config(tmp_path, max_rows=1)) as ob:
        s = await ob.stats()
        assert s.evicted == {FIRE: 0, ALARM: 0, EVENT: 1, MEAS: 1}
        await ob.append([record(FIRE, 3)])
        assert (await ob.stats()).evicted[ALARM] == 1


async def test_age_limit_expires_measurements_but_not_alarms_by_default(tmp_path: Path) -> None:
    now = [T0]
    async with Outbox(config(tmp_path), clock_ms=lambda: now[0]) as ob:
        await ob.append([measurement(0), record(ALARM, 1), record(FIRE, 2)])
        now[0] += 3 * 86_400_000
        await ob.append([measurement(3)])
        now[0] += 5 * 86_400_000  # the first measurement is 8 days old, the second 5
        assert await ob.expire() == {MEAS: 1}
        assert await remaining(ob) == [2, 3, 4]
        s = await ob.stats()
        assert s.expired == {FIRE: 0, ALARM: 0, EVENT: 0, MEAS: 1}
        assert s.evicted[MEAS] == 1  # expired records are part of evicted
        assert await ob.expire() == {}


async def test_age_limit_per_class_is_configurable(tmp_path: Path) -> None:
    now = [T0]
    ages = {ALARM: 60.0, MEAS: None}
    async with Outbox(config(tmp_path, max_age_s=ages), clock_ms=lambda: now[0]) as ob:
        await ob.append([measurement(0), record(ALARM, 1), record(EVENT, 2)])
        now[0] += 61_000
        assert await ob.expire() == {ALARM: 1}
        assert await remaining(ob) == [1, 3]


async def test_expiry_runs_by_itself(tmp_path: Path) -> None:
    now = [T0]
    cfg = config(tmp_path, max_age_s={MEAS: 1.0}, maintenance_interval_s=0.05)
    async with Outbox(cfg, clock_ms=lambda: now[0]) as ob:
        await ob.append([measurement(0)])
        now[0] += 2_000
        for _ in range(1000):  # up to 20 s: a generous deadline, not a timing assertion
            if (await ob.stats()).total_depth == 0:
                break
            await asyncio.sleep(0.02)
        assert (await ob.stats()).expired[MEAS] == 1
