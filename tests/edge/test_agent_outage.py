"""The broker stopped for a minute under a working agent: nothing lost, fire alarms first.

Real processes throughout: the panel and Modbus simulators, ``firegate agent run`` and a
Mosquitto that is stopped for 60 s (its persistence keeps the observer's and the collector
stand-in's sessions) while the panel raises fire alarms and the pressure transmitters keep
being read. The agent deletes what the collector confirms stored.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from protocols.wire import Event, EventType, Priority, Record
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port
from tests.infra.simproc import simulator

from .agent_rig import agent, agent_config, last_seq, stored_seqs, until
from .test_uplink_infra import Collector, Observer

GW = "gw-outage"
OUTAGE_S = 60.0
SCENARIO = """
[panel]
events = [
  { at = 25, action = "fire_alarm", component = "smoke-3F-east" },
  { at = 30, action = "fault", component = "module-pump-room" },
  { at = 45, action = "fire_alarm", component = "heat-3F-kitchen" },
]
[modbus]
devices = [{ id = 1, profile = "pressure-a" }, { id = 2, profile = "level" }]
"""
DEVICES = """
[[modbus.device]]
unit = 1
profile = "pressure-a"
interval_s = 0.2

[[modbus.device]]
unit = 2
profile = "level"
interval_s = 0.2
"""


async def test_broker_down_a_minute_loses_nothing_and_fire_alarms_go_first(
        tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    obs = Observer(broker.port, client_id="outage-observer", persistent=True)
    collector = Collector(broker.port, client_id="outage-collector", persistent=True)
    site = tmp_path / "site.toml"
    site.write_text(SCENARIO, encoding="utf-8")
    link = tmp_path / "panel-tty"
    try:
        async with (
            simulator("panel", "--pty", "--link", str(link), "--scenario", str(site),
                      "--quiet"),
            simulator("modbus", "--tcp", f"127.0.0.1:{free_port()}", "--scenario", str(site))
            as (_, address),
        ):
            host, port = address.rsplit(":", 1)
            config = agent_config(tmp_path, gw=GW, broker_port=broker.port, panel_port=link,
                                  modbus=(host, int(port)), devices=DEVICES)
            async with agent(config):
                await until(lambda: len(set(obs.seqs(GW))) >= 20, "records flowing", 30)
                stopped_ms = int(time.time() * 1000)
                broker.stop()
                await asyncio.sleep(OUTAGE_S)
                restarted_ms = int(time.time() * 1000)
                broker.start()  # same port, same persistence
                await asyncio.sleep(3)
                await until(lambda: len(stored_seqs(tmp_path)) <= 40, "the backlog drained", 60)
            # Stopped cleanly: whatever is left is in the outbox, the rest at the broker.
            last = last_seq(tmp_path)
            left = set(stored_seqs(tmp_path))
            await until(lambda: set(obs.seqs(GW)) | left == set(range(1, last + 1)),
                        "every seq at the broker or still stored", 30)
            assert collector.seqs(GW) | left == set(range(1, last + 1))
    finally:
        collector.close()
        obs.close()
        broker.stop()

    seen: dict[int, Record] = {}
    for batch in obs.batches(GW):
        for r in batch.records:
            assert seen.setdefault(r.seq, r) == r  # a duplicate is the same record
    outage = {s for s, r in seen.items() if stopped_ms <= r.receive_ms < restarted_ms}
    assert len(outage) > 500  # a minute of readings at 10/s
    fires = {s for s in outage if seen[s].priority is Priority.FIRE}
    detectors = {r.source.id for s in fires for r in [seen[s]]
                 if isinstance(r, Event) and r.type is EventType.FIRE_ALARM}
    assert {"panel/1-1/42-0x00000bb9", "panel/1-1/31-0x00000bba"} <= detectors
    # After the reconnect, the outage's fire alarms went out before anything else of it.
    order = [r.seq for b in obs.batches(GW) for r in b.records if r.seq in outage]
    assert set(order[:len(fires)]) == fires

