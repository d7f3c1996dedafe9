"""The collector writing to a real InfluxDB-protocol server (VictoriaMetrics), which is stopped
for a while mid-stream: nothing is acknowledged while it is down, nothing is lost, and the
backlog the broker held is written when it is back."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

from protocols.wire import Measurement
from simulators.fleet import FleetConfig, run_fleet
from tests.infra.mosquitto import Mosquitto
from tests.infra.victoria import VictoriaMetrics

from .conftest import async_wait_until, config_data, running, write_config

RETRIES = 10  # failed writes while down: about 6 s; bench/bench_collector.py does a minute


def stored_seqs(vm: VictoriaMetrics) -> dict[str, set[int]]:
    """Per gateway, the seq field of every stored record (fg_event_seq, fg_value_seq)."""
    out: dict[str, set[int]] = defaultdict(set)
    for series in vm.export('{__name__=~"fg_(event|value)_seq"}'):
        out[series["metric"]["gateway"]].update(int(v) for v in series["values"])
    return out


async def test_database_down_for_a_while_nothing_acked_nothing_lost(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    with VictoriaMetrics(tmp_path / "vm") as vm:
        cfg = write_config(tmp_path / "c.toml", config_data(
            tmp_path / "state", mosquitto, influx={"url": vm.url, "token": "unused"},
            collector={"retry_min_s": 0.1, "retry_max_s": 1.0}))
        fleet_cfg = FleetConfig(broker=f"mqtt://127.0.0.1:{mosquitto.port}", gateways=6,
                                rate=150, duration=6.0, batch_interval=0.1, max_batch=100,
                                alarm_rate=0.005, seed=17, keep_records=True)
        with running(cfg) as c:
            fleet = asyncio.create_task(run_fleet(fleet_cfg))
            await async_wait_until(lambda: c.metrics.records_stored.value() > 500,
                                   "the first records stored")
            vm.stop()
            await async_wait_until(lambda: c.writer.sink_error is not None, "a failed write")
            # One writer thread stores, commits and acknowledges a group before it takes the
            # next: once a write has failed, every group before it is acknowledged and
            # counted, and nothing more can be until a write succeeds.
            acks, stored = c.metrics.acks.value(), c.metrics.records_stored.value()
            failed = c.metrics.sink_errors.value("transient")
            # Down for a while, counted in the writer's own retries (each backs off 0.1 s,
            # doubling to 1 s), so a slow machine gets a longer outage, not a weaker test;
            # and records keep arriving meanwhile (positive control: there is a backlog).
            await async_wait_until(
                lambda: c.metrics.sink_errors.value("transient") >= failed + RETRIES
                and c.metrics.records_in.value() > stored,
                f"{RETRIES} more failed writes, with records received")
            # Counters only grow: equal now means nothing acknowledged or stored all along.
            assert c.metrics.acks.value() == acks
            assert c.metrics.records_stored.value() == stored
            vm.start()
            # The broker held what was not acknowledged (and the gateways what was not
            # confirmed): the fleet completes once the backlog is written.
            report = await fleet
            assert report.ok, report.to_json()["errors"]
            await async_wait_until(lambda: c.metrics.records_stored.value() >= report.produced,
                                   "the backlog written")
            assert c.writer.sink_error is None
        got = stored_seqs(vm)
        for gw, ledger in report.gateways.items():
            assert got[gw] == set(ledger.produced), gw
        # Values and times intact (VictoriaMetrics keeps milliseconds and numbers only).
        values = {}
        for series in vm.export('{__name__="fg_value_value"}'):
            m = series["metric"]
            for t, v in zip(series["timestamps"], series["values"], strict=True):
                values[(m["gateway"], m["source"], t)] = v
        n = 0
        for gw, ledger in report.gateways.items():
            assert ledger.records is not None
            for r in ledger.records.values():
                if isinstance(r, Measurement):
                    assert values[(gw, r.source.id, r.receive_ms)] == r.value, (gw, r.seq)
                    n += 1
        assert n > report.produced * 0.9
