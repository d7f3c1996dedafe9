"""A full outbox under the real pipeline: measurements evicted oldest-first, alarms kept, and
every eviction reported upward (health data and the technician's status)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge.app import outbox_snapshot
from edge.drivers.base import Counters, LinkBoard
from edge.health import HealthProbe
from edge.outbox import Outbox, OutboxConfig
from edge.pipeline import Pipeline
from edge.rules import RuleEngine
from edge.state import StateWriter
from protocols.wire import Priority, decode_health, encode_health

from .helpers import event, measurement


async def test_cap_evicts_measurements_first_keeps_alarms_and_reports(tmp_path: Path) -> None:
    config = OutboxConfig(tmp_path / "outbox.db", max_bytes=60_000, reserve_bytes=0)
    state = StateWriter(tmp_path / "state.db")
    async with Outbox(config) as outbox:
        pipeline = Pipeline(outbox, RuleEngine([]), state)
        alarms = []
        for i in range(2_000):
            await pipeline.emit([measurement(i, 0.3 + i / 1e5)])
            if i % 100 == 0:
                await pipeline.emit([event(Priority.FIRE, i), event(Priority.ALARM, i)])
                alarms.append(i)
        stats = await outbox.stats()
        assert stats.payload_bytes <= 60_000
        assert stats.evicted[Priority.MEASUREMENT] > 1_000
        assert stats.evicted[Priority.FIRE] == stats.evicted[Priority.ALARM] == 0
        assert stats.depth[Priority.FIRE] == stats.depth[Priority.ALARM] == len(alarms)
        db = sqlite3.connect(f"file:{config.path}?mode=ro", uri=True)
        values = [s for (s,) in db.execute("SELECT seq FROM outbox WHERE priority = 3")]
        db.close()
        newest = max(values)
        assert min(values) > stats.evicted[Priority.MEASUREMENT]  # the oldest went first
        assert newest >= stats.last_seq - 2  # the newest reading is still there
        probe = HealthProbe("gw-test", outbox, tmp_path, counters=lambda: {"x": Counters()},
                            links=LinkBoard())
        health = decode_health(encode_health(await probe.health()))  # as the cloud sees it
        assert health.evicted == {"measurement": stats.evicted[Priority.MEASUREMENT]}
        assert health.outbox_depth == stats.total_depth
        snap = outbox_snapshot(stats)  # what `firegate status` shows
        assert snap["evicted"] == {"measurement": stats.evicted[Priority.MEASUREMENT]}
    state.close()
