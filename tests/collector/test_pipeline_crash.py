"""``kill -9`` of the collector process mid-stream, again and again: nothing lost, nothing
stored twice, values and times intact (the broker redelivers what was not acknowledged)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from collector.ledger import SeqLedger
from simulators.fleet import FleetConfig, run_fleet
from tests.infra.mosquitto import Mosquitto

from .conftest import (
    CollectorProcess,
    assert_store_matches,
    async_wait_until,
    config_data,
    missing_records,
    toml,
)

ROUNDS = 20


async def test_kill_9_mid_stream_twenty_rounds(mosquitto: Mosquitto, tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    # Small write groups and a small receive maximum: many commits and acks per second, so
    # the kills land inside every step (write, commit, ack) over the rounds.
    path.write_text(toml(config_data(
        tmp_path / "state", mosquitto,
        collector={"group_max_messages": 4, "group_wait_ms": 0.0},
        mqtt={"receive_maximum": 8})))
    store = tmp_path / "state" / "store.sqlite3"
    CollectorProcess(path).start().stop()  # creates the session and its subscriptions
    fleet = asyncio.create_task(run_fleet(FleetConfig(
        broker=f"mqtt://127.0.0.1:{mosquitto.port}", gateways=8, rate=120, duration=12.0,
        batch_interval=0.1, max_batch=60, alarm_rate=0.01, seed=9, keep_records=True,
        delete_on="puback")))  # the collector dies over and over: the broker is the receiver
    rng = random.Random(20)
    kills = 0
    while kills < ROUNDS:
        proc = await asyncio.to_thread(CollectorProcess(path).start)
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        assert await asyncio.to_thread(proc.kill) == -9
        kills += 1
    report = await fleet
    assert report.ok, report.to_json()["errors"]
    final = await asyncio.to_thread(CollectorProcess(path).start)
    try:
        await async_wait_until(lambda: store.exists() and not missing_records(report, store),
                               "every record in the store")
    finally:
        assert await asyncio.to_thread(final.stop) == 0
    assert kills == ROUNDS
    assert_store_matches(report, store)
    ledger = SeqLedger(tmp_path / "state" / "ledger.sqlite")
    try:
        stats = ledger.stats()
        assert stats.stored == report.produced and stats.missing == 0
    finally:
        ledger.close()
