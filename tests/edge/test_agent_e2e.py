"""The whole agent as a process: simulators -> firegate agent run -> real Mosquitto.

The panel simulator speaks GB/T 26875.3 over a pty, the Modbus simulator serves TCP, and
paho clients are the cloud: an observer, and a collector stand-in that confirms what it
stored (the agent deletes records on that confirmation). Nothing in between is replaced.
"""

from __future__ import annotations

import signal
from pathlib import Path

from protocols.wire import Event, EventType, GatewayState, Measurement, Priority
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port
from tests.infra.simproc import simulator

from .agent_rig import agent, agent_config, firegate_json, until
from .test_uplink_infra import Collector, Observer

GW = "gw-e2e"
DETECTOR = "panel/1-1/42-0x00000bb9"  # smoke-3F-east: type 42 at address 3001

SCENARIO = """
[panel]
events = [
  { at = 4, action = "fire_alarm", component = "smoke-3F-east" },
]

[modbus]
noise = 0
devices = [{ id = 1, profile = "pressure-a", initial = 0.35 }]
events = [
  { at = 3, device = 1, action = "hydrant_open", to = 0.05, tau = 0.3 },
  { at = 9, device = 1, action = "hydrant_close", tau = 0.3 },
]
"""

DEVICES = """
[[modbus.device]]
unit = 1
name = "1F hydrant"
profile = "pressure-a"
interval_s = 0.25
"""

RULE = """
[[rule]]
name = "hydrant-low"
match = "modbus/bus1/*/pressure"
low = 0.15
hysteresis = 0.02
debounce_s = 1.5
"""


def events_of(obs: Observer) -> list[Event]:
    return [r for b in obs.batches(GW) for r in b.records if isinstance(r, Event)]


async def test_fire_alarm_and_pressure_drop_reach_the_broker(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SCENARIO, encoding="utf-8")
    link = tmp_path / "panel-tty"
    obs = Observer(mosquitto.port)
    collector = Collector(mosquitto.port)
    try:
        async with (
            simulator("panel", "--pty", "--link", str(link), "--scenario", str(site),
                      "--quiet"),
            simulator("modbus", "--tcp", f"127.0.0.1:{free_port()}", "--scenario", str(site))
            as (_, address),
        ):
            host, port = address.rsplit(":", 1)
            config = agent_config(tmp_path, gw=GW, broker_port=mosquitto.port, panel_port=link,
                                  modbus=(host, int(port)), devices=DEVICES, extra=RULE)
            async with agent(config) as proc:
                def fire() -> list[Event]:
                    return [e for e in events_of(obs) if e.type is EventType.FIRE_ALARM
                            and e.source.id == DETECTOR]

                await until(lambda: bool(fire()), "the fire alarm at the broker", 40)
                alarm = fire()[0]
                assert alarm.priority is Priority.FIRE and alarm.active
                assert alarm.source.description == "3F 东侧走廊"
                assert alarm.source_ms is not None  # the panel's own time label
                assert abs(alarm.receive_ms - alarm.source_ms) < 60_000  # sim clock = host now

                def thresholds() -> list[tuple[bool, float | None]]:
                    return [(e.active, e.value) for e in events_of(obs)
                            if e.type is EventType.THRESHOLD_LOW]

                await until(lambda: len(thresholds()) >= 2, "threshold alarm and restore", 40)
                (raised, low_value), (cleared, back_value) = thresholds()[:2]
                assert raised and not cleared
                assert low_value is not None and low_value < 0.15
                assert back_value is not None and back_value >= 0.17
                values = [r.value for b in obs.batches(GW) for r in b.records
                          if isinstance(r, Measurement)]
                assert min(values) < 0.1 and max(values) > 0.3  # the drop and the recovery

                # The technician's view of the running agent.
                status = firegate_json("status", "--config", str(config))
                assert status["running"] is True
                assert status["links"]["panel/com1"]["state"] == "up"
                assert status["links"]["uplink"]["state"] == "up"
                assert status["uplink"]["acked_records"] > 0
                await until(lambda: firegate_json("status", "--config", str(config))
                            ["uplink"]["confirmed_records"] > 0, "a confirmed delete", 30)
                assert "sent_unconfirmed" in status["outbox"]
                assert status["uplink"]["delete_on"] == "stored"
                # The outbox view names what awaits confirmation while the agent runs.
                assert firegate_json("outbox", "--config", str(config))["sent_unconfirmed"] \
                    is not None
                fired = firegate_json("events", "--config", str(config), "--kind", "fire_alarm",
                                      "--source", DETECTOR)
                assert [f["description"] for f in fired] == ["3F 东侧走廊"]
                sensors = firegate_json("sensors", "--config", str(config))
                assert [s["source_id"] for s in sensors] == ["modbus/bus1/1/pressure"]
                assert sensors[0]["rule"]["low"] == 0.15

                proc.send_signal(signal.SIGTERM)
                assert await proc.wait() == 0
            # A clean stop says so in the retained status; the local view still reads.
            await until(lambda: any(s.state is GatewayState.OFFLINE for s in obs.statuses(GW)),
                        "the offline status")
            last = obs.statuses(GW)[-1]
            assert last.state is GatewayState.OFFLINE and last.reason == "shutdown"
            status = firegate_json("status", "--config", str(config))
            assert status["running"] is False
            outbox = firegate_json("outbox", "--config", str(config))
            assert outbox["classes"] == {}  # stored by the collector, all confirmed
            assert outbox["sent_unconfirmed"] is None  # not running: nothing is out
            assert collector.seqs(GW) >= set(obs.seqs(GW))
    finally:
        collector.close()
        obs.close()
