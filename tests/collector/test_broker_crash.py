"""A broker crash loses nothing the gateways held (issue 18, part 1).

Mosquitto saves its state only every ``autosave_interval`` (30 min by default) and does not
restore a persistent session's ``$share`` subscriptions, so ``kill -9`` of the broker loses what
it had acknowledged and, for a while, everything sent to the shared subscription. The gateways
(the fleet simulator, with the agent's rule: a record is deleted only on the collector's
``stored`` confirmation) keep every record until then and send again what is not confirmed.
Here the broker is killed twice during a fleet run - in the second test the collector with it -
and every record a gateway produced ends in the store, once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

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

RECORDS = 3_000


async def crash_run(tmp_path: Path, mosquitto: Mosquitto, *, with_collector: bool) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml(config_data(tmp_path / "state", mosquitto,
                                     mqtt={"reconnect_max_s": 1})))
    store = tmp_path / "state" / "store.sqlite3"
    collector = CollectorProcess(path).start()
    progress: list[Progress] = []
    fleet = asyncio.create_task(run_fleet(FleetConfig(
        broker=f"mqtt://127.0.0.1:{mosquitto.port}", gateways=10, records=RECORDS, rate=60,
        batch_interval=0.1, max_batch=40, alarm_rate=0.02, seed=18, keep_records=True,
        confirm_timeout=2.0, drain_timeout=120.0),
        progress=progress.append, progress_interval=0.05))
    try:
        for share in (3, 2):  # two crashes: at a third and at two thirds of the run
            await async_wait_until(
                lambda s=share: bool(progress) and progress[-1].produced >= RECORDS // s,
                f"{RECORDS // share} records produced")
            mosquitto.stop(signal.SIGKILL)  # by PID: the broker this test started
            if with_collector:
                assert await asyncio.to_thread(collector.kill) == -9
            mosquitto.start()  # same port and persistence file
            if with_collector:
                collector = await asyncio.to_thread(CollectorProcess(path).start)
        report = await fleet
        await async_wait_until(lambda: not missing_records(report, store),
                               "every produced record in the store", timeout=120)
    finally:
        if not fleet.done():
            fleet.cancel()
        collector.stop()
    assert report.produced >= RECORDS  # and the gateways' own events (link faults...)
    assert_store_matches(report, store, values=False)
    totals = report.totals()
    assert totals["confirmed"] == report.produced and totals["missing"] == 0, totals
    assert report.ok or set(report.all_errors()) <= {"connection lost"}, report.all_errors()


async def test_a_broker_killed_twice_loses_nothing(tmp_path: Path,
                                                   mosquitto: Mosquitto) -> None:
    await crash_run(tmp_path, mosquitto, with_collector=False)


async def test_broker_and_collector_killed_together_twice_lose_nothing(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    await crash_run(tmp_path, mosquitto, with_collector=True)
