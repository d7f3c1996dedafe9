"""The whole firmware in real MicroPython (unix port, ``-X heapsize=100K``), end to end.

The node reads the Modbus simulator (``firegate sim modbus``, RTU on a pty or Modbus TCP),
publishes to a real Mosquitto over TLS with the credentials and ACL lines ``firegate
provision`` generated, and a paho collector decodes everything with the strict decoders of
``protocols.wire``. It is killed with SIGKILL (a power cut) and restarted, with the broker
down for a while: nothing it stored may be lost, no seq reused or skipped.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocols.wire import Bus, Event, EventType, GatewayState, Measurement, Record
from tests.infra.simproc import simulator

from .helpers import (
    COLLECTOR,
    SCENARIO,
    WAIT,
    Collector,
    ProvisionedBroker,
    bus_toml,
    every,
    make_node,
    ring_held,
    ring_state,
)

EVENTS_RTU = """
[[modbus.events]]
at = 3.0
device = 1
action = "set"
value = 0.1
"""
EVENTS_TCP = """
[[modbus.events]]
at = 2.0
device = 5
action = "exception"
code = 2

[[modbus.events]]
at = 2.0
device = 1
action = "out_of_range"
value = 1.9
"""


def by_source(records: dict[int, list[Record]]) -> dict[tuple[str, str], list[Record]]:
    out: dict[tuple[str, str], list[Record]] = {}
    for r in every(records):
        kind = r.type.value if isinstance(r, Event) else "m"
        out.setdefault((r.source.id, kind), []).append(r)
    return out


def assert_complete(records: dict[int, list[Record]], upto: int) -> None:
    """Every seq 1..upto arrived; a seq that arrived twice (QoS 1, resends) is the same
    record both times."""
    missing = [s for s in range(1, upto + 1) if s not in records]
    assert not missing, f"lost seqs: {missing[:20]}"
    for seq, copies in records.items():
        assert all(c == copies[0] for c in copies), f"seq {seq} was reused: {copies}"


async def test_node_reads_the_simulator_and_loses_nothing_across_power_cuts(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO.replace("{events}", EVENTS_RTU))
    async with simulator("modbus", "--rtu", "--no-pace", "--scenario", str(scenario)) as (
            _sim, pty):
        node, prov = make_node(tmp_path, fw_build, broker, bus_toml(pty))
        gw = prov.credentials.gateway_id
        broker.start()
        col = Collector(broker, gw)
        try:
            node.start()
            node.wait_line("uplink: connected")

            # -- A: values, rules, offline detection, status and health over TLS -------------
            def seen(source: str, kind: str) -> bool:
                return (source, kind) in by_source(col.records())

            col.wait(lambda: seen("modbus/rs485/1/pressure", "threshold_low")
                     and seen("modbus/rs485/9", "sensor_offline") and bool(col.health),
                     "a threshold alarm, an offline sensor and a health report")
            got = by_source(col.records())
            pressure = got["modbus/rs485/1/pressure", "m"][0]
            assert isinstance(pressure, Measurement)
            assert (pressure.value, pressure.unit) == (0.35, "MPa")
            assert pressure.source.bus is Bus.FIRMWARE
            assert pressure.source.description == "hydrant-3F"
            board = {sid.rsplit("/", 1)[1]: recs[0] for (sid, kind), recs in got.items()
                     if sid.startswith("modbus/rs485/5/") and kind == "m"}
            assert {k: (r.value, getattr(r, "unit", None)) for k, r in board.items()} == {
                "residual_current": (40.0, "mA"), "temperature_1": (32.0, "°C"),
                "temperature_2": (30.5, "°C"), "temperature_3": (-4.2, "°C"),
                "temperature_4": (28.0, "°C")}
            low = got["modbus/rs485/1/pressure", "threshold_low"][0]
            assert isinstance(low, Event)
            assert (low.active, low.value, low.limit, low.source.bus) == (True, 0.1, 0.15,
                                                                          Bus.RULE)
            assert low.detail == "rule hydrant-low: 0.1 MPa < 0.15 MPa"
            offline = got["modbus/rs485/9", "sensor_offline"][0]
            assert isinstance(offline, Event) and offline.active
            assert offline.detail == "no answer to 2 polls: no answer from unit 9 within 0.3 s"
            online = [s for s, _ in col.status if s.state is GatewayState.ONLINE]
            assert online and online[0].reason == "boot" and online[0].site == "test-site"
            health = col.health[0]
            assert health.gateway_id == gw and health.links["uplink"].value == "up"
            assert_complete(col.records(), max(col.records()))
            # Delivered means stored: what the collector confirmed leaves the ring's flash.
            upto = max(col.records())
            col.wait(lambda: not {s for s in ring_held(node.dir / "ring") if s <= upto},
                     "the confirmed records deleted from the ring")

            # -- B: the broker goes away; the node buffers, loses power, comes back ----------
            broker.stop()
            before = max(col.records())
            col.wait(lambda: ring_state(node.dir / "ring")[0] >= before + 10,
                     "records stored while the broker is down")
            node.kill()  # a power cut while records wait for the broker
            stored, waiting = ring_state(node.dir / "ring")
            assert waiting >= 10
            node.start()  # the broker is still down: the node reads its ring and goes on
            col.wait(lambda: ring_state(node.dir / "ring")[0] >= stored + 5,
                     "new records after the reboot")
            broker.start()  # the collector's persistent session survived in mosquitto.db
            target = ring_state(node.dir / "ring")[0]
            col.wait(lambda: max(col.records(), default=0) >= target
                     and all(s in col.records() for s in range(1, target + 1)),
                     "the node to catch up", timeout=WAIT)
            assert_complete(col.records(), target)
            col.wait(lambda: not {s for s in ring_held(node.dir / "ring") if s <= target},
                     "the backlog confirmed and deleted from the ring")
            # One ring, one epoch, across the power cuts; health names the same one.
            epochs = {b.epoch for b in col.batches} | {h.epoch for h in col.health}
            assert len(epochs) == 1 and 0 not in epochs, epochs
            reboot = [s for s, _ in col.status if s.state is GatewayState.ONLINE]
            assert len(reboot) >= 2 and reboot[-1].reason == "boot"

            # -- C: a power cut while connected: the broker publishes the last will ----------
            node.kill()
            col.wait(lambda: any(s.state is GatewayState.OFFLINE for s, _ in col.status),
                     "the last will")
            will = next(s for s, _ in col.status if s.state is GatewayState.OFFLINE)
            assert will.reason == "lwt" and will.gateway_id == gw
            assert not col.errors
            assert "MemoryError" not in node.log()
        except BaseException:
            print("node output:\n" + node.log()[-5000:])
            raise
        finally:
            node.kill()
            col.close()


async def test_node_over_modbus_tcp_reports_device_faults_and_answers_commands(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO.replace("{events}", EVENTS_TCP))
    async with simulator("modbus", "--tcp", "127.0.0.1:0", "--scenario", str(scenario)) as (
            _sim, address):
        node, prov = make_node(tmp_path, fw_build, broker, bus_toml(address), tls=False)
        gw = prov.credentials.gateway_id
        broker.start()
        col = Collector(broker, gw)
        cloud = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cloud")
        cloud.username_pw_set(*COLLECTOR)
        try:
            node.start()
            node.wait_line("uplink: connected")
            col.wait(lambda: {("modbus/rs485/5", "device_error"),
                              ("modbus/rs485/1/pressure", "out_of_range")}
                     <= set(by_source(col.records())), "a device error and an out-of-range")
            got = by_source(col.records())
            err = got["modbus/rs485/5", "device_error"][0]
            assert isinstance(err, Event) and err.active
            assert err.detail == "exception 2 (illegal data address) reading holding 0..5"
            rng = got["modbus/rs485/1/pressure", "out_of_range"][0]
            assert isinstance(rng, Event) and rng.type is EventType.OUT_OF_RANGE
            assert (rng.active, rng.limit) == (True, 1.6)
            assert rng.value is not None and rng.value > 1.6
            # an out-of-range reading is never sent as a measurement
            late = [m for m in got.get(("modbus/rs485/1/pressure", "m"), [])
                    if isinstance(m, Measurement) and m.receive_ms >= rng.receive_ms]
            assert not late

            # commands from the cloud, answered on cmd/ack (decoded strictly by the collector)
            cloud.connect("127.0.0.1", broker.port)
            cloud.loop_start()
            now = int(time.time() * 1000)
            for cid, name in (("c-1", "ping"), ("c-2", "reboot"), ("c-3", "report_health")):
                cloud.publish(f"firegate/v1/{gw}/cmd",
                              json.dumps({"v": 1, "id": cid, "cmd": name, "ts": now}), qos=1)
            stale = {"v": 1, "id": "c-4", "cmd": "ping", "ts": now - 120_000, "ttl": 60}
            cloud.publish(f"firegate/v1/{gw}/cmd", json.dumps(stale), qos=1)
            col.wait(lambda: len(col.acks) >= 4, "four command acks")
            by_id = {a.id: a for a in col.acks}
            assert by_id["c-1"].ok and by_id["c-1"].result == {"version": "0.1.0"}
            assert not by_id["c-2"].ok and "not supported" in str(by_id["c-2"].error)
            assert by_id["c-3"].ok
            assert not by_id["c-4"].ok and "stale" in str(by_id["c-4"].error)

            # Ctrl-C (SIGINT): a deliberate stop says "offline, shutdown", and no last will
            assert node.proc is not None
            node.proc.send_signal(signal.SIGINT)
            col.wait(lambda: any(s.state is GatewayState.OFFLINE for s, _ in col.status),
                     "the shutdown status")
            offline = [s for s, _ in col.status if s.state is GatewayState.OFFLINE]
            assert [s.reason for s in offline] == ["shutdown"]
            assert_complete(col.records(), max(col.records()))
            assert not col.errors
        finally:
            cloud.loop_stop()
            node.kill()
            col.close()
