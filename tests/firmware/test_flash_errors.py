"""Flash write failures (OSError: flash full or failing) in the firmware's ring and the node
(docs/firmware.md "Flash write failures").

The promise: a failed append stores nothing and leaves the ring's RAM index as flash holds it
(fg/ring.py: all or nothing); its seqs go to the next records, in the same slots, so seqs stay
unique and gap-free, after a reboot too; the fire alarm that could not be stored is raised
again until it is (conditions are level-triggered, a rule's change is undone), delivered once;
the failures are counted (``ring.store_failed``) and the node does not reset.

The failures are forced by a **stand-in** for the flash: ``FLASH_PY`` (below, test-only,
written into the node's directory in front of test_memory_errors.py's ``faults.py`` and never
copied to a board) replaces ``open`` so that the segment files ``Ring.append`` opens fail as the
file ``faults`` says, one line per opening. Everything else is real: MicroPython's unix port
running the firmware as flash.sh builds it on real files, Mosquitto over TLS with the
provisioned ACL, the Modbus simulator, the strict collector of helpers.py that confirms.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from protocols.registers import get_profile
from protocols.wire import Event, Priority
from simulators.modbus.model import Action, BusModel, ManualClock
from simulators.modbus.scenario import DeviceSpec, Scenario
from simulators.modbus.server import serve_tcp

from .helpers import (
    SLOT,
    Collector,
    ProvisionedBroker,
    json_lines,
    make_node,
    ring_state,
    run_mpy,
)
from .test_memory_errors import (
    BUS,
    FAULTS_PY,
    FIRE_TEXT,
    PRESSURE,
    FaultNode,
    assert_complete,
    counter,
    fire_alarms,
    logged,
    until,
)

# The stand-in (MicroPython), run before test_memory_errors.py's (which then runs main.py).
FLASH_PY = r'''
# TEST-ONLY stand-in (tests/firmware/test_flash_errors.py); never copied to a board.
# Flash write failures: while fg.ring.Ring.append runs, each opening of a segment file
# (ring/s<n>, mode r+b) takes the first line "flash K" of the file "faults": K = 0, the
# opening fails; K > 0, its K-th write fails after writing half its bytes (a write cut short);
# K = -1, no failure. Both raise OSError(28) (ENOSPC: flash full). "flash 0+" stays: every
# opening from then on fails. "state K" does the same to the openings of state.json.tmp.
import builtins
import os

_open = builtins.open
_appending = [False]


def _flash_plan(tag):
    try:
        with _open("faults") as f:
            lines = f.read().split("\n")
    except OSError:
        return None
    for n in range(len(lines)):
        if lines[n].startswith(tag):
            k = int(lines[n][len(tag):].rstrip("+"))
            if lines[n].endswith("+"):
                return k
            del lines[n]
            with _open("faults.tmp", "w") as f:
                f.write("\n".join(lines))
            os.rename("faults.tmp", "faults")
            return k
    return None


class _Cut:
    def __init__(self, f, k):
        self.f = f
        self.k = k
        self.n = 0

    def seek(self, *args):
        return self.f.seek(*args)

    def write(self, data):
        self.n += 1
        if self.n == self.k:
            self.f.write(bytes(data[:len(data) // 2]))
            raise OSError(28)
        return self.f.write(data)

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _flash_open(path, mode="r", *args):
    k = None
    if _appending[0] and mode == "r+b" and "/s" in path:
        k = _flash_plan("flash ")
    elif path.endswith("state.json.tmp"):
        k = _flash_plan("state ")
    if k is not None:
        if k >= 0:
            print("fault: OSError forced at %s (%d)" % (path, k))
            if k == 0:
                raise OSError(28)
            return _Cut(_open(path, mode), k)
    return _open(path, mode, *args)


builtins.open = _flash_open
from fg import ring as _ring

_real_append = _ring.Ring.append


def _append(self, records):
    _appending[0] = True
    try:
        return _real_append(self, records)
    finally:
        _appending[0] = False


_ring.Ring.append = _append
'''

# -- the ring on its own --------------------------------------------------------------------------

DRIVER = FLASH_PY + """
import json, sys
from fg.ring import Ring
from fg.ringopen import open_ring
from fg.stored import confirm
kb, ops = json.loads(sys.stdin.read())
counters = {}
r = open_ring(Ring('ring', counters), kb)
for op in ops:
    if op[0] == 'append':
        try:
            out = r.append([tuple(x[:5]) + (0,) + tuple(x[5:]) for x in op[1]])
        except OSError as e:
            out = 'OSError %d' % e.args[0]
        print('OUT', json.dumps(out))
    elif op[0] == 'confirm':
        print('OUT', json.dumps(confirm(r, op[1])))
    elif op[0] == 'state':  # held: [seq, receive time] of every held record, by seq
        held = sorted([x[5], x[6]] for x in r.read(r.pending(r.capacity)))
        print('OUT', json.dumps({'depth': r.depth, 'live': r.live, 'last_seq': r.last_seq,
                                 'evicted': r.evicted, 'counters': counters, 'held': held}))
"""


def m(rt: int) -> list[Any]:
    """A measurement as fg/records.py keeps it (kind, prio, code, flags, src, rt, v, lim, aux);
    its receive time tells records apart."""
    return [0, 3, 0, 0, "firmware\tmodbus/b/1/pressure", rt, 0.35, 0.0, 0]


def fire(rt: int) -> list[Any]:
    return [1, 0, 0, 7, "rule\tmodbus/b/1/pressure", rt, 0.1, 0.15, 0]


def run(path: Path, faults: list[int], *ops: list[Any], kb: int = 4) -> list[Any]:
    """One MicroPython process (a boot) on the ring in ``path``, the segment openings of its
    appends failing as ``faults`` says (one entry per opening, see FLASH_PY)."""
    (path / "faults").write_text("".join(f"flash {k}\n" for k in faults))
    out = json_lines(run_mpy(DRIVER, path, stdin=json.dumps([kb, list(ops)]), heap="1M"),
                     "OUT")
    assert "flash" not in (path / "faults").read_text(), "a forced failure was not reached"
    return out


@pytest.fixture
def ring(tmp_path: Path, fw_build: Path) -> Path:
    (tmp_path / "fg").symlink_to(fw_build / "fg")
    return tmp_path


def test_a_failed_append_stores_nothing_and_its_seqs_go_to_the_next_records(
        ring: Path) -> None:
    """Without the fix, the RAM index listed the failed records (depth 6, last seq 6), the
    next records took seqs 7, 8 (a gap of 4-6 the collector would report as lost) and the
    ring read a record cut in half as if it were whole."""
    first, cut, state1, refused, state2, later, state3 = run(
        ring, [-1, 2, 0],
        ["append", [m(1), m(2), m(3)]],
        ["append", [m(4), fire(5), m(6)]],  # the measurement lands, the alarm is cut: refused
        ["state"],
        ["append", [fire(7)]],  # the segment cannot be opened: refused
        ["state"],
        ["append", [fire(8), m(9)]],  # the flash works again
        ["state"])
    assert first == [1, 2, 3]
    assert cut == refused == "OSError 28"
    held = [[1, 1], [2, 2], [3, 3]]
    assert state1 == state2 == {"depth": 3, "live": 3, "last_seq": 3, "evicted": [0, 0, 0, 0],
                                "counters": {}, "held": held}
    assert later == [4, 5]  # the seqs the failed appends did not take: no gap
    assert state3["held"] == [*held, [4, 8], [5, 9]] and state3["depth"] == 5
    # a reboot reads the same back: seq 4 is the alarm, not the measurement that once landed
    # in its slot, and the slot cut in half was written again (no torn slot)
    state = run(ring, [], ["state"])[0]
    assert state["held"] == state3["held"] and state["last_seq"] == 5
    assert state["counters"] == {}


def test_a_reboot_after_a_cut_write_finds_the_first_seqs_and_no_gap(ring: Path) -> None:
    """What a failure leaves on flash is a run of the next seqs (written in seq order): after
    a reboot they are held, the cut slot is torn (counted), and the next seq follows them."""
    run(ring, [], ["append", [m(1), m(2)]])
    assert run(ring, [2], ["append", [m(3), fire(4), m(5)]]) == ["OSError 28"]
    # power cut before the flash works again: the measurement that landed is seq 3
    state, after, state2 = run(ring, [], ["state"], ["append", [fire(6)]], ["state"])
    assert state["held"] == [[1, 1], [2, 2], [3, 3]] and state["last_seq"] == 3
    assert state["counters"] == {"torn_slots": 1}
    assert after == [4]
    assert state2["held"] == [[1, 1], [2, 2], [3, 3], [4, 6]]


def test_a_failed_append_over_a_full_ring_evicts_only_what_it_overwrote(ring: Path) -> None:
    """When the ring is full, an append takes the oldest measurements' slots. If its write
    fails after reaching one of them, that record may be gone from flash: it counts as
    evicted; the victims it did not reach are still held. The next append writes its first
    seqs into the slots the failed one reached."""
    full = [m(i) for i in range(1, 103)]  # 4 KB: one segment of 102 slots
    first, cut, state, seqs, state2 = run(
        ring, [-1, 2],
        ["append", full],
        ["append", [fire(200), fire(201), fire(202)]],  # the second slot is cut
        ["state"],
        ["append", [fire(300), fire(301), fire(302)]],
        ["state"])
    assert first == list(range(1, 103))
    assert cut == "OSError 28"
    # two slots reached (seqs 1 and 2: the first written, the second cut): gone
    assert state["evicted"] == [0, 0, 0, 2] and state["depth"] == state["live"] == 100
    assert state["last_seq"] == 102
    assert [s for s, _ in state["held"]] == list(range(3, 103))
    assert seqs == [103, 104, 105]
    assert state2["evicted"] == [0, 0, 0, 3] and state2["depth"] == 102
    assert state2["held"] == [*([s, s] for s in range(4, 103)), [103, 300], [104, 301],
                              [105, 302]]
    reboot = run(ring, [], ["state"])[0]
    assert reboot["held"] == state2["held"] and reboot["evicted"] == [0, 0, 0, 3]
    assert reboot["counters"] == {}


# -- the node -------------------------------------------------------------------------------------

@asynccontextmanager
async def flaky_node(tmp_path: Path, fw_build: Path, broker: ProvisionedBroker,
                     faults: list[int | str], pressure: float = 0.1,
                     extra: tuple[str, ...] = ()
                     ) -> AsyncIterator[tuple[FaultNode, Collector, BusModel]]:
    """test_memory_errors.py's node (a hydrant under the fire rule, unit 1; a tank that never
    answers, unit 9) with the flash stand-in; ``faults`` ("flash K" lines) and ``extra``
    lines armed from its start."""
    profile = get_profile("pressure-a")
    bus = Scenario((DeviceSpec(1, profile, "hydrant", {profile.primary.name: pressure}),),
                   noise=0.0).build(ManualClock())
    async with serve_tcp(bus) as sim:
        host, port = sim.address.rsplit(":", 1)
        plain, prov = make_node(tmp_path, fw_build, broker, BUS.format(host=host, port=port))
        (plain.dir / "faults.py").write_text(FLASH_PY + FAULTS_PY)
        node = FaultNode(plain.dir)
        node.arm(*(f"flash {k}" for k in faults), *extra)
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


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS, as fg/modbus.py computes it."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def whole_held(ring_dir: Path) -> list[int]:
    """The seqs of the held slots ('L') of a ring on flash whose CRC is good (fg/ring.py: over
    the slot but its state byte and the CRC), as opening the ring finds them."""
    out = []
    for seg in sorted(ring_dir.glob("s[0-9]*")):
        data = seg.read_bytes()
        for i in range(0, len(data) - SLOT + 1, SLOT):
            slot = data[i:i + SLOT]
            if slot[0] == 0x4C and crc16(slot[1:SLOT - 2]) == int.from_bytes(slot[-2:], "big"):
                out.append(int.from_bytes(slot[6:8], "big") << 32
                           | int.from_bytes(slot[8:12], "big"))
    return sorted(out)


def flash_faults(node: FaultNode) -> int:
    return logged(node, "fault: OSError forced at")


def store_failures(node: FaultNode) -> tuple[int, int]:
    """(failed appends, their records) as the node logged them."""
    lines = [line for line in list(node.lines) if "ring: cannot store" in line]
    return len(lines), sum(int(line.split("cannot store ")[1].split()[0]) for line in lines)


def cleared(col: Collector) -> list[Event]:
    return [r for rs in col.records().values() for r in rs[:1]
            if isinstance(r, Event) and r.source.id == PRESSURE and not r.active]


@pytest.mark.parametrize("faults", [[0], [0] * 6, [2]], ids=["once", "six-times", "cut"])
async def test_a_fire_alarm_whose_storing_fails_is_stored_later_and_delivered_once(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker,
        faults: list[int | str]) -> None:
    """The pressure is low from the start: the first records stored hold the fire alarm, and
    the flash fails for them (once; six times in a row; a write cut after the first slot).
    Without the fix the alarm was never stored or sent (the rule's state said it was raised),
    or went out with a seq the cut write held in half."""
    async with flaky_node(tmp_path, fw_build, broker, faults) as (node, col, bus):
        await until(node, lambda: flash_faults(node) == len(faults), "the flash failures")
        await until(node, lambda: bool(fire_alarms(col)), "the fire alarm")
        alarm = fire_alarms(col)
        assert len(alarm) == 1
        assert alarm[0].priority is Priority.FIRE and alarm[0].detail == FIRE_TEXT
        assert alarm[0].seq <= 2  # among the first records stored: nothing got in before it
        failed, lost = store_failures(node)
        assert failed == len(faults) and lost >= failed
        await until(node, lambda: counter(col, "ring", "store_failed") == lost,
                    "the failures counted in a health report")
        assert counter(col, "rules", "raised") == 1  # counted once, when it was stored
        await until(node, lambda: max(col.records()) > alarm[0].seq + 2, "records after it")
        assert_complete(col.records())
        bus.trigger(1, Action.SET, value=0.35)  # the node still clears it
        await until(node, lambda: bool(cleared(col)), "the fire alarm cleared")
        assert len(fire_alarms(col)) == 1 and len(cleared(col)) == 1
        assert_complete(col.records())
        assert node.alive() and "fatal" not in node.log()


async def test_a_power_cut_while_the_flash_fails_loses_no_alarm_and_reuses_no_seq(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    """The first append is cut after its first slot (a measurement lands on flash), then the
    flash keeps failing; the node runs on, counting, until the power is cut. After the
    restart the measurement that landed is delivered with its seq, the alarm is raised again
    and delivered once, every seq from 1 arrives, none twice with different contents. Without
    the fix the node sent the records its RAM index listed and flash did not hold (the
    collector refused them) and the alarm never came."""
    async with flaky_node(tmp_path, fw_build, broker, [2, "0+"]) as (node, col, _):
        await until(node, lambda: flash_faults(node) >= 4, "the flash failing")
        await until(node, lambda: counter(col, "ring", "store_failed") >= 4,
                    "the failures counted in a health report")
        assert not col.records() and not fire_alarms(col)
        assert node.alive() and "fatal" not in node.log()
        node.kill()  # the power cut
        # seq 1 (the measurement) landed whole, seq 2 (the alarm) was cut: torn
        assert whole_held(node.dir / "ring") == [1]
        assert ring_state(node.dir / "ring") == (2, 2)  # what a reader that trusts it sees
        node.arm()  # the flash works after the restart
        node.start()
        await until(node, lambda: bool(fire_alarms(col)), "the fire alarm")
        alarm = fire_alarms(col)
        assert len(alarm) == 1 and alarm[0].detail == FIRE_TEXT
        assert alarm[0].seq == 3  # the first poll after the restart: its measurement, then it
        await until(node, lambda: max(col.records()) > 4, "records after it")
        assert_complete(col.records())
        assert counter(col, "ring", "torn_slots") == 1
        assert "fatal" not in node.log()


async def test_a_state_file_that_cannot_be_written_is_counted_and_written_later(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    """state.json (the raised conditions and rules) is written after the records are stored;
    the flash fails for it once. Without the fix the OSError reset the node."""
    async with flaky_node(tmp_path, fw_build, broker, [], extra=("state 0",)) as (
            node, col, _):
        await until(node, lambda: bool(fire_alarms(col)), "the fire alarm")
        assert flash_faults(node) == 1 and logged(node, "state: cannot save") == 1
        state = node.dir / "state.json"
        await until(node, lambda: state.exists() and json.loads(state.read_text())["rules"]
                    == [[PRESSURE, 0]], "the rule's state saved")
        await until(node, lambda: counter(col, "ring", "state_failed") == 1,
                    "the failure counted in a health report")
        assert len(fire_alarms(col)) == 1 and counter(col, "ring", "store_failed") == 0
        assert_complete(col.records())
        assert node.alive() and "fatal" not in node.log()
