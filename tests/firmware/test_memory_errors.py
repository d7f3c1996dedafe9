"""Forced MemoryErrors in the real firmware process (docs/firmware.md "Memory: a 100 KB heap").

The promise: a ``MemoryError`` outside the alarm path (a health report, a command, applying a
confirmation, connecting, an event's text) is counted and the node keeps running; one on the
alarm path itself (polling, storing, writing a batch) resets the board, and nothing is lost,
because the ring is on flash and conditions are level-triggered.

A test suite that never makes a MemoryError happen cannot show that. A heap just small enough
for one allocation to fail would depend on the heap's layout, so the failures are forced
deterministically by a **stand-in** for the allocator's failure: ``faults.py`` (below,
test-only, written into the node's directory and never copied to a board) runs before the real
entry point ``main.py`` and makes chosen imports and calls raise ``MemoryError``, each once,
when the test names them in the file ``faults`` (``import fg.health``: loading the module
finds no free block; ``call fg.ring.Ring.append``: the call does). Everything else is real:
MicroPython's unix port running the firmware as flash.sh builds it, Mosquitto over TLS with the
provisioned ACL, the Modbus simulator (in-process, so the test can drop the pressure when it
wants a fire alarm), the strict paho collector of helpers.py that confirms what it receives.

Each test forces its failures (armed before the start, or while the node runs), then checks
where the firmware says the failure is counted (health report counters, its log), that the
node still polls and publishes (a fire alarm raised afterwards arrives, with its text), and
that every seq arrived and none was reused. The heap is larger than the 100 KB budget
(``HEAP``): the stand-in's own code must not cause real MemoryErrors; each count is checked
exactly, so one would fail the test.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from protocols.registers import get_profile
from protocols.wire import Channel, Event, EventType, GatewayState, Priority, Record, topic
from simulators.modbus.model import Action, BusModel, ManualClock
from simulators.modbus.scenario import DeviceSpec, Scenario
from simulators.modbus.server import serve_tcp

from .helpers import (
    MICROPYTHON,
    SLOT,
    WAIT,
    Collector,
    Node,
    ProvisionedBroker,
    make_node,
    ring_held,
    ring_state,
)

HEAP = "112K"  # 100 KB is the firmware's budget; the stand-in below needs room of its own

# The stand-in (MicroPython). The firmware's own code is not changed for it: imports go through
# builtins.__import__ (an on-demand module, fg/health.py say, is imported again each time it is
# needed: fg/app.py drops it after use), and resident functions are looked up on their module
# or class at each call, so replacing them there reaches every caller.
FAULTS_PY = r'''
# TEST-ONLY stand-in (tests/firmware/test_memory_errors.py); never copied to a board.
# Each line of the file "faults" arms one forced MemoryError, raised once:
#   import fg.NAME             importing fg.NAME fails (a module load that finds no free block)
#   call fg.MOD[.CLASS].NAME   calling that function fails (an allocation at its start)
# Then the real entry point, main.py, runs unchanged.
import builtins
import os
import sys


def take(name):
    try:
        with open("faults") as f:
            armed = f.read().split("\n")
    except OSError:
        return False
    if name not in armed:
        return False
    armed.remove(name)
    with open("faults.tmp", "w") as f:
        f.write("\n".join(armed))
    os.rename("faults.tmp", "faults")
    print("fault: MemoryError forced at " + name)
    return True


def wrap(owner, attr, name):
    real = getattr(owner, attr)

    def forced(*args, **kw):
        if take(name):
            raise MemoryError
        return real(*args, **kw)

    setattr(owner, attr, forced)


ON_DEMAND = {"fg.health": "build", "fg.cmd": "run", "fg.stored": "apply",
             "fg.texts": "detail", "fg.connect": "session"}
real_import = builtins.__import__


def forced_import(name, g=None, l=None, fromlist=None, level=0):
    # "from fg import health" looks fg.health up as name "fg.health" when it is not loaded
    if name.startswith("fg.") and take("import " + name):
        raise MemoryError
    mod = real_import(name, g, l, fromlist, level)
    for key, attr in ON_DEMAND.items():
        m = sys.modules.get(key)  # wrapped once loaded whole (not while it imports)
        if m is not None and hasattr(m, attr) and not hasattr(m, "_forced"):
            wrap(m, attr, "call %s.%s" % (key, attr))
            m._forced = True
    return mod


builtins.__import__ = forced_import
from fg import modbus, mqtt, records, ring

wrap(modbus.Master, "read", "call fg.modbus.Master.read")
wrap(ring.Ring, "append", "call fg.ring.Ring.append")
wrap(records, "write_json", "call fg.records.write_json")
wrap(mqtt.MQTTClient, "_send_str", "call fg.mqtt.MQTTClient._send_str")
import main
'''

BUS = """
[[modbus]]
name = "rs485"
host = "{host}"
tcp_port = {port}
timeout_s = 0.3

[[modbus.device]]
unit = 1
profile = "pressure-a"
name = "hydrant-3F"
interval_s = 0.5
offline_after = 2

[[modbus.device]]
unit = 9
profile = "level"
name = "roof-tank"
interval_s = 0.5
offline_after = 2
backoff_max_s = 1

[[rule]]
name = "hydrant-low"
match = "modbus/rs485/*/pressure"
low = 0.15
hysteresis = 0.02
priority = "fire"
"""
PRESSURE = "modbus/rs485/1/pressure"
FIRE_TEXT = "rule hydrant-low: 0.1 MPa < 0.15 MPa"


class FaultNode(Node):
    """The firmware process started through the stand-in: ``micropython faults.py
    config.json`` (main.py reads its config path from argv[1], as on the board)."""

    def start(self, heap: str = HEAP) -> Node:
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen([MICROPYTHON, "-X", f"heapsize={heap}", "faults.py",
                                      "config.json"], cwd=self.dir, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        proc = self.proc

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.lines.append(line.rstrip("\n"))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        return self

    def arm(self, *faults: str) -> None:
        """Arm forced MemoryErrors (written whole, then renamed: the node never reads half)."""
        tmp = self.dir / "faults.new"
        tmp.write_text("\n".join(faults))
        tmp.replace(self.dir / "faults")

    def forced(self) -> list[str]:
        """The faults that fired, in order."""
        tag = "fault: MemoryError forced at "
        return [line.split(tag, 1)[1] for line in self.lines if tag in line]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@asynccontextmanager
async def running(tmp_path: Path, fw_build: Path, broker: ProvisionedBroker,
                  armed: tuple[str, ...] = (), pressure: float = 0.35,
                  mqtt_keys: dict[str, Any] | None = None
                  ) -> AsyncIterator[tuple[FaultNode, Collector, BusModel]]:
    """A node reading a hydrant's pressure (unit 1, the fire rule) and a tank that never
    answers (unit 9: offline), with ``armed`` faults from its start; the collector confirms."""
    profile = get_profile("pressure-a")
    bus = Scenario((DeviceSpec(1, profile, "hydrant", {profile.primary.name: pressure}),),
                   noise=0.0).build(ManualClock())
    async with serve_tcp(bus) as sim:
        host, port = sim.address.rsplit(":", 1)
        plain, prov = make_node(tmp_path, fw_build, broker, BUS.format(host=host, port=port),
                                mqtt_keys=mqtt_keys)
        (plain.dir / "faults.py").write_text(FAULTS_PY)
        node = FaultNode(plain.dir)
        node.arm(*armed)
        broker.start()
        col = Collector(broker, prov.credentials.gateway_id)
        try:
            node.start()
            yield node, col, bus
            assert not col.errors, col.errors[:3]
        except BaseException:
            print("node output:\n" + node.log()[-6000:])
            raise
        finally:
            node.kill()
            col.close()


async def until(node: FaultNode, predicate: Callable[[], bool], what: str, *,
                alive: bool = True, timeout: float = WAIT) -> None:
    """Wait for ``predicate`` without blocking the loop (the simulator runs in it); with
    ``alive``, a node that exits meanwhile fails at once."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if alive and not node.alive():
            raise AssertionError(f"the node exited ({node.proc and node.proc.returncode}) "
                                 f"while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def logged(node: Node, text: str) -> int:
    return sum(text in line for line in list(node.lines))


def counter(col: Collector, group: str, name: str) -> int:
    """Counter ``name`` of ``group`` (uplink, modbus/rs485...) in the latest health report."""
    if not col.raw_health:
        return 0
    return int(col.raw_health[-1].get("counters", {}).get(group, {}).get(name, 0))


def fire_alarms(col: Collector) -> list[Event]:
    """The hydrant's fire alarms (threshold_low raised), one per seq."""
    out = []
    records = col.records()
    for seq in sorted(records):
        r = records[seq][0]
        if isinstance(r, Event) and r.source.id == PRESSURE and \
                r.type is EventType.THRESHOLD_LOW and r.active:
            out.append(r)
    return out


def assert_complete(records: dict[int, list[Record]]) -> None:
    """Every seq from 1 to the highest arrived; a seq that arrived twice (QoS 1, a resend)
    is the same record both times."""
    missing = [s for s in range(1, max(records) + 1) if s not in records]
    assert not missing, f"lost seqs: {missing[:20]}"
    for seq, copies in records.items():
        assert all(c == copies[0] for c in copies), f"seq {seq} was reused: {copies}"


async def fire_alarm_arrives(node: FaultNode, col: Collector, bus: BusModel) -> None:
    """The positive control: after the failures, the node still polls, stores and sends. The
    hydrant's pressure drops; its fire alarm arrives once, with its text, newer than every
    record before it."""
    before = max(col.records(), default=0)
    assert not fire_alarms(col)
    bus.trigger(1, Action.SET, value=0.1)
    await until(node, lambda: bool(fire_alarms(col)), "the fire alarm")
    alarm = fire_alarms(col)
    assert len(alarm) == 1
    assert alarm[0].seq > before
    assert alarm[0].priority is Priority.FIRE and alarm[0].detail == FIRE_TEXT
    await until(node, lambda: max(col.records()) > alarm[0].seq, "records after the alarm")
    assert_complete(col.records())


async def started(node: FaultNode, col: Collector) -> None:
    """Connected, sending records, one health report in."""
    await until(node, lambda: logged(node, "uplink: connected") > 0, "the connection")
    await until(node, lambda: len(col.records()) >= 5 and bool(col.raw_health),
                "records and a health report")


# -- outside the alarm path: counted, the node keeps running ------------------------------------

async def test_a_health_report_without_memory_is_dropped_counted_and_the_node_runs_on(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    async with running(tmp_path, fw_build, broker) as (node, col, bus):
        await started(node, col)
        assert counter(col, "uplink", "health_dropped") == 0
        # loading fg/health.py finds no room; then building the next report does not
        node.arm("import fg.health", "call fg.health.build")
        await until(node, lambda: len(node.forced()) == 2, "both faults")
        assert node.forced() == ["import fg.health", "call fg.health.build"]
        await until(node, lambda: logged(node, "no memory for the health report: dropped") == 2,
                    "both reports dropped")
        reports = len(col.raw_health)
        await until(node, lambda: len(col.raw_health) > reports, "the next health report")
        assert counter(col, "uplink", "health_dropped") == 2
        await fire_alarm_arrives(node, col, bus)
        assert "fatal" not in node.log()


async def test_a_command_without_memory_is_counted_and_the_next_one_is_answered(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    """Without the fix in fg/uplink.py (the import of fg/cmd.py inside the ``try``), a
    command whose code found no room to load reset the node."""
    async with running(tmp_path, fw_build, broker) as (node, col, bus):
        await started(node, col)
        node.arm("import fg.cmd", "call fg.cmd.run")
        now = int(time.time() * 1000)
        for cid in ("c-1", "c-2", "c-3"):  # handled in this order, one at a time
            col.client.publish(topic(col.gateway, Channel.CMD), json.dumps(
                {"v": 1, "id": cid, "cmd": "ping", "ts": now}), qos=1)
        await until(node, lambda: bool(col.acks), "an ack")
        assert node.forced() == ["import fg.cmd", "call fg.cmd.run"]
        assert [(a.id, a.ok) for a in col.acks] == [("c-3", True)]  # c-1, c-2 lost, counted
        reports = len(col.raw_health)
        await until(node, lambda: len(col.raw_health) > reports, "the next health report")
        assert counter(col, "uplink", "cmd_no_memory") == 2
        assert counter(col, "uplink", "commands") == 1
        await fire_alarm_arrives(node, col, bus)
        assert "fatal" not in node.log()


async def test_a_confirmation_without_memory_is_counted_and_its_records_confirmed_again(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    async with running(tmp_path, fw_build, broker,
                       mqtt_keys={"confirm_timeout_s": 2.0}) as (node, col, bus):
        await started(node, col)
        assert counter(col, "uplink", "unconfirmed_resent") == 0
        # two confirmations in a row are not applied: what they named stays held
        node.arm("import fg.stored", "call fg.stored.apply")
        await until(node, lambda: len(node.forced()) == 2, "both faults")
        assert node.forced() == ["import fg.stored", "call fg.stored.apply"]
        upto = max(col.records())
        # ... so it is sent again after the confirm timeout, confirmed again, and freed
        await until(node, lambda: any(len(c) > 1 for c in col.records().values()),
                    "a record sent again")
        await until(node, lambda: not {s for s in ring_held(node.dir / "ring") if s <= upto},
                    "every record up to the faults confirmed and freed")
        reports = len(col.raw_health)
        await until(node, lambda: len(col.raw_health) > reports, "the next health report")
        assert counter(col, "uplink", "confirm_no_memory") == 2
        assert counter(col, "uplink", "unconfirmed_resent") >= 1
        await fire_alarm_arrives(node, col, bus)
        assert "fatal" not in node.log()


async def test_connecting_without_memory_is_counted_and_retried(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    """The connection is lost; the first attempt to reconnect cannot load fg/connect.py (at
    start-up that module sets up TLS: a MemoryError there is a start-up failure, so the faults
    are armed once the node runs), the first to reach the broker fails inside CONNECT, after
    the TLS handshake, its socket open; then the node connects."""
    async with running(tmp_path, fw_build, broker) as (node, col, bus):
        await started(node, col)
        node.arm("import fg.connect", "call fg.mqtt.MQTTClient._send_str")
        await asyncio.to_thread(broker.stop)
        await until(node, lambda: node.forced() == ["import fg.connect"],
                    "a reconnect that cannot load its code")
        await asyncio.to_thread(broker.start)
        await until(node, lambda: logged(node, "uplink: connected") == 2, "the reconnection")
        assert node.forced() == ["import fg.connect", "call fg.mqtt.MQTTClient._send_str"]
        assert logged(node, "uplink: no memory to connect") == 2
        await until(node, lambda: counter(col, "uplink", "connects") == 2,
                    "a health report after the reconnection")
        assert counter(col, "uplink", "connect_no_memory") == 2
        online = [s.reason for s, _ in col.status if s.state is GatewayState.ONLINE]
        assert online[-1] == "reconnect"
        await fire_alarm_arrives(node, col, bus)
        assert "fatal" not in node.log()


async def test_an_event_whose_text_finds_no_memory_goes_without_it(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    # the first event sent (the tank that never answers) cannot load fg/texts.py
    async with running(tmp_path, fw_build, broker, armed=("import fg.texts",)) as (
            node, col, bus):
        await started(node, col)

        def offline() -> list[Record]:
            return [r for rs in col.records().values() for r in rs[:1]
                    if isinstance(r, Event) and r.type is EventType.SENSOR_OFFLINE]

        await until(node, lambda: bool(offline()), "the tank's offline alarm")
        assert node.forced() == ["import fg.texts"]
        tank = offline()
        assert len(tank) == 1 and isinstance(tank[0], Event)
        assert tank[0].source.id == "modbus/rs485/9" and tank[0].active
        assert tank[0].detail is None  # sent without its text rather than not at all
        await until(node, lambda: counter(col, "modbus/rs485", "detail_no_memory") > 0,
                    "the missing text counted")
        assert counter(col, "modbus/rs485", "detail_no_memory") == 1
        await fire_alarm_arrives(node, col, bus)  # its text is back
        assert "fatal" not in node.log()


# -- on the alarm path: a reset, and nothing is lost --------------------------------------------

def fire_on_flash(ring_dir: Path) -> set[int]:
    """The seqs of the fire-class events a ring holds on flash (slot layout: fg/ring.py FMT,
    the state byte 'L', then kind << 4 | class: an event, E = 1, of class 0)."""
    out = set()
    for seg in sorted(ring_dir.glob("s[0-9]*")):
        data = seg.read_bytes()
        for i in range(0, len(data) - SLOT + 1, SLOT):
            state, kind_prio, *_, seq_hi, seq_lo = struct.unpack(">BBBBHHI", data[i:i + 12])
            if state == 0x4C and kind_prio == 0x10:
                out.add(seq_hi << 32 | seq_lo)
    return out


@pytest.mark.parametrize("fault", [
    "call fg.modbus.Master.read",  # polling: the poll that would see the low pressure
    "call fg.ring.Ring.append",  # storing: the first records stored hold the fire alarm
    "call fg.records.write_json",  # writing the batch that holds it (it goes first)
])
async def test_a_memory_error_on_the_alarm_path_resets_and_the_alarm_is_delivered(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker, fault: str) -> None:
    """docs/firmware.md: a MemoryError on the alarm path resets the board (on the unix port
    ``hw.reset()`` exits with status 3); the ring is on flash and conditions are
    level-triggered, so after the restart the fire alarm is delivered, once. The pressure is
    low from the start and the fault armed before it: the first poll, the first records
    stored, the first batch are the alarm's."""
    async with running(tmp_path, fw_build, broker, armed=(fault,), pressure=0.1) as (
            node, col, bus):
        await until(node, lambda: not node.alive(), "the reset", alive=False)
        node.kill()  # already gone: this collects the rest of its output
        assert node.proc is not None and node.proc.returncode == 3
        assert node.forced() == [fault]
        assert logged(node, "fatal: MemoryError") == 1
        last_seq, _ = ring_state(node.dir / "ring")
        on_flash = fire_on_flash(node.dir / "ring")
        if fault == "call fg.records.write_json":
            assert len(on_flash) == 1  # stored before the reset: sent after it
        else:
            assert (last_seq, on_flash) == (0, set())  # not stored: found again after it
        node.start()  # the board after its reset; the fault is spent
        await until(node, lambda: bool(fire_alarms(col)), "the fire alarm")
        alarm = fire_alarms(col)
        assert len(alarm) == 1
        assert alarm[0].priority is Priority.FIRE and alarm[0].detail == FIRE_TEXT
        if on_flash:
            assert {alarm[0].seq} == on_flash
        await until(node, lambda: max(col.records()) > alarm[0].seq, "records after the alarm")
        assert_complete(col.records())
        assert logged(node, "fatal") == 1
        bus.trigger(1, Action.SET, value=0.35)  # and the node still clears it
        await until(node, lambda: any(
            isinstance(r, Event) and r.source.id == PRESSURE and not r.active
            for rs in col.records().values() for r in rs), "the fire alarm cleared")
        assert_complete(col.records())
