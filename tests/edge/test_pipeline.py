"""The pipeline's two doors: ``emit`` (durable on return: the panel confirms after it) and
``submit`` (readings queued for a shared commit; events still durable on return)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.config.rules import RuleConfig
from edge.drivers.base import EmitRefused
from edge.outbox import Outbox, OutboxFull
from edge.pipeline import Pipeline
from edge.rules import RuleEngine
from edge.state import StateReader, StateWriter
from protocols.wire import EventType, Priority

from .helpers import config, event, measurement

LOW = RuleConfig("low", "modbus/bus1/*/pressure", low=0.15, high=1.0, hysteresis=0.02,
                 debounce_s=0)


async def test_emit_is_durable_on_return(tmp_path: Path) -> None:
    state = StateWriter(tmp_path / "state.db")
    async with Outbox(config(tmp_path, submit_window_s=5.0)) as outbox:
        pipeline = Pipeline(outbox, RuleEngine([]), state)
        await pipeline.emit([measurement(1)])
        assert outbox.last_seq == 1  # committed before emit returned
    state.close()


async def test_submit_queues_readings_but_waits_for_events(tmp_path: Path) -> None:
    state = StateWriter(tmp_path / "state.db")
    async with Outbox(config(tmp_path, submit_window_s=5.0)) as outbox:
        pipeline = Pipeline(outbox, RuleEngine([LOW]), state)
        await pipeline.submit([measurement(1, 0.30)])
        assert outbox.last_seq == 0  # queued for a shared commit, not yet stored
        # A reading the rules turn into a threshold alarm: that event is durable on return,
        # and the reading queued before it is committed with it, numbered first.
        await asyncio.wait_for(pipeline.submit([measurement(2, 0.10)]), 2.5)
        assert outbox.last_seq == 3
        assert outbox.depth(Priority.ALARM) == 1
        assert ("modbus/bus1/3/pressure", EventType.THRESHOLD_LOW.value) in pipeline.conditions
        state.flush()
        with StateReader(tmp_path / "state.db") as reader:
            assert [s.value for s in reader.sensors()] == [0.10]  # the view saw the stored readings
    state.close()


async def test_readings_the_outbox_refuses_are_counted(tmp_path: Path) -> None:
    """A full disk (here: the file cap) that not even evicting readings can cure: the
    submitted readings fail after ``submit`` returned, so the pipeline counts them."""
    cfg = config(tmp_path, max_file_bytes=64 * 1024, reserve_bytes=0, submit_window_s=0.0)
    state = StateWriter(tmp_path / "state.db")
    async with Outbox(cfg) as outbox:
        pipeline = Pipeline(outbox, RuleEngine([]), state)
        try:
            for i in range(100_000):
                await pipeline.emit([event(Priority.FIRE, i)])
        except EmitRefused as e:
            assert e.reason == "full" and isinstance(e.__cause__, OutboxFull)
        else:
            raise AssertionError("the file cap was never reached")
        await pipeline.submit([measurement(i) for i in range(20)])
        for _ in range(1000):  # up to 20 s: a generous deadline, not a timing assertion
            if pipeline.counters.snapshot().get("measurements_not_stored"):
                break
            await asyncio.sleep(0.02)
        assert pipeline.counters.snapshot()["measurements_not_stored"] == 20
    state.close()
