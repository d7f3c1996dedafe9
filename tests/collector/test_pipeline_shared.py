"""Three collector processes on one shared subscription: the load is split, one is killed,
the others carry on, and once it is back (same client id) nothing is missing.

Mosquitto 2.0 keeps routing the dead member's share into its persistent session (measured:
round robin over online and offline members), so that share waits in the broker until the
member returns - docs/collector.md, "Deployment", says how to run collectors so they do.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from collector.config import load_config
from collector.ledger import SeqLedger
from collector.status import collect_status
from simulators.fleet import FleetConfig, Progress, run_fleet
from tests.infra.mosquitto import Mosquitto

from .conftest import (
    CollectorProcess,
    assert_store_matches,
    async_wait_until,
    config_data,
    missing_records,
    toml,
)

RECORDS = 13 * 80 * 6  # 13 gateways at 80 records/s each: six seconds of production


def stored(state: Path) -> int:
    ledger = SeqLedger(state / "ledger.sqlite")
    try:
        return ledger.stats().stored
    finally:
        ledger.close()


async def test_three_collectors_share_the_load_and_survive_one_kill(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    paths = []
    for i in (1, 2, 3):
        path = tmp_path / f"c{i}.toml"
        path.write_text(toml(config_data(
            tmp_path / f"state{i}", mosquitto, collector={"id": f"c{i}", "report_gaps": False},
            store={"sqlite": str(store)})))
        paths.append(path)
    procs = [await asyncio.to_thread(CollectorProcess(p).start) for p in paths]
    progress: list[Progress] = []
    fleet = asyncio.create_task(run_fleet(FleetConfig(
        broker=f"mqtt://127.0.0.1:{mosquitto.port}", gateways=13, rate=80, records=RECORDS,
        batch_interval=0.1, max_batch=50, alarm_rate=0.01, seed=31, keep_records=True),
        progress=progress.append, progress_interval=0.05))
    await async_wait_until(lambda: all(stored(tmp_path / f"state{i}") > 0 for i in (1, 2, 3)),
                           "each collector storing its share")
    # Killed mid-stream, by the fleet's own count rather than by a clock: a third of the
    # records produced, so two thirds are still to come whatever the machine's speed.
    await async_wait_until(lambda: bool(progress) and progress[-1].produced >= RECORDS // 3,
                           "a third of the records produced")
    assert await asyncio.to_thread(procs[2].kill) == -9
    at_kill = [stored(tmp_path / f"state{i}") for i in (1, 2)]
    # The survivors carry on: both keep storing after the kill (round robin gives each about
    # a third of the messages still to come, some 1,400 records; ask for 312) ...
    await async_wait_until(lambda: all(stored(tmp_path / f"state{i}") > n + RECORDS // 20
                                       for i, n in zip((1, 2), at_kill, strict=True)),
                           "the survivors storing after the kill")
    # ... and the dead member's share waits in its session until it is back (the gateways
    # keep what no collector has confirmed, so the fleet completes once it is).
    procs[2] = await asyncio.to_thread(CollectorProcess(paths[2]).start)
    try:
        report = await fleet
        assert report.ok, report.to_json()["errors"]
        assert report.produced == RECORDS
        await async_wait_until(lambda: not missing_records(report, store),
                               "every record in the store")
    finally:
        for p in procs:
            assert await asyncio.to_thread(p.stop) == 0
    assert_store_matches(report, store)
    shares = [stored(tmp_path / f"state{i}") for i in (1, 2, 3)]
    assert sum(shares) >= report.produced  # a redelivered message may land on another member
    assert all(s > report.produced / 10 for s in shares), shares  # split, not one taking all
    configs = [load_config(p) for p in paths]
    merged = collect_status(configs)
    assert merged["gaps"]["ranges"] == 0 and merged["gaps"]["records"] == 0
    assert {c["collector"] for c in merged["collectors"]} == {"c1", "c2", "c3"}
    assert {c["state"] for c in merged["collectors"]} == {"stopped"}
