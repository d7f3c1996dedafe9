"""The firmware's flash ring (fg/ring.py), run in real MicroPython on real files.

Each ``run`` is a fresh MicroPython process on the same directory, so "reopen" is what a
reboot does: everything the next run sees was read back from the files (the ops of one run
share the ring in RAM, as the firmware does between reboots).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .helpers import SEG_SLOTS, SLOT, json_lines, run_mpy

DRIVER = """
import json, sys
from fg.ring import Ring
from fg.ringopen import open_ring
from fg.stored import confirm as stored_confirm
kb, ops = json.loads(sys.stdin.read())
counters = {}
r = open_ring(Ring('ring', counters), kb)

def seqs(slots):
    return [x[5] for x in r.read(slots)]

def confirm(ranges):
    return stored_confirm(r, ranges)

for op in ops:
    if op[0] == 'append':
        print('OUT', json.dumps(r.append([tuple(x[:5]) + (0,) + tuple(x[5:]) for x in op[1]])))
    elif op[0] == 'pending':
        slots = r.pending(op[1])
        print('OUT', json.dumps([list(x) for x in r.read(slots)]))
    elif op[0] == 'send':  # a batch published and PUBACKed: its seqs
        slots = r.pending(op[1])
        out = seqs(slots)
        r.ack(slots)
        print('OUT', json.dumps(out))
    elif op[0] == 'puback':  # delete_on "puback": the PUBACK frees (the depth left)
        r.ack(r.pending(op[1]), True)
        print('OUT', json.dumps(r.depth))
    elif op[0] == 'confirm':  # the collector's stored: how many slots it freed
        print('OUT', json.dumps(confirm(op[1])))
    elif op[0] == 'deliver':  # sent and confirmed at once: the depth left
        slots = r.pending(op[1])
        done = seqs(slots)
        r.ack(slots)
        confirm([[q, q] for q in sorted(done)])
        print('OUT', json.dumps(r.depth))
    elif op[0] == 'resend':  # the resend command's answer (fg/cmd.py), for these args
        from fg import cmd
        class Up:  # what cmd._resend uses of the Uplink
            ring = r
            counters = {}
        ok, error, result = cmd._resend(Up, op[1])
        print('OUT', json.dumps([ok, error, json.loads(result) if result else None]))
    elif op[0] == 'age':  # steps of the confirm timeout's clock: records pending again
        print('OUT', json.dumps([r.age() for _ in range(op[1])]))
    elif op[0] == 'state':
        best = r.oldest((0, 1, 2, 3))
        print('OUT', json.dumps({'depth': r.depth, 'live': r.live, 'last_seq': r.last_seq,
                                 'capacity': r.capacity, 'evicted': r.evicted,
                                 'counters': counters, 'epoch': r.epoch_hex(),
                                 'oldest_rt': next(r.read([best]))[6] if best >= 0 else None}))
"""


class RingDir:
    """A directory playing the node's flash, with the firmware code linked in."""

    def __init__(self, path: Path, build: Path, kb: int = 4) -> None:
        self.path = path
        self.kb = kb
        (path / "fg").symlink_to(build / "fg")

    def run(self, *ops: list[Any]) -> list[Any]:
        out = run_mpy(DRIVER, self.path, stdin=json.dumps([self.kb, list(ops)]), heap="1M")
        return json_lines(out, "OUT")

    def state(self) -> dict[str, Any]:
        return self.run(["state"])[0]  # type: ignore[no-any-return]


def m(rt: int, value: float = 0.35, src: str = "firmware\tmodbus/b/1/pressure") -> list[Any]:
    """A measurement as fg/records.py keeps it: kind, prio, code, flags, src, rt, v, lim, aux."""
    return [0, 3, 0, 0, src, rt, value, 0.0, 0]


def alarm(rt: int, prio: int = 1, active: bool = True) -> list[Any]:
    return [1, prio, 0, 7 if active else 6, "rule\tmodbus/b/1/pressure", rt, 0.1, 0.15, 0]


@pytest.fixture
def ring(tmp_path: Path, fw_build: Path) -> RingDir:
    return RingDir(tmp_path, fw_build)


def test_records_go_out_most_urgent_class_first_then_oldest(ring: RingDir) -> None:
    recs = [m(1), alarm(2), m(3), alarm(4, prio=2), alarm(5, prio=0), m(6), alarm(7)]
    seqs, pending = ring.run(["append", recs], ["pending", 100])
    assert seqs == [1, 2, 3, 4, 5, 6, 7]
    assert [(r[1], r[5]) for r in pending] == [(0, 5), (1, 2), (1, 7), (2, 4), (3, 1), (3, 3),
                                               (3, 6)]
    # a limited batch is the head of that order
    assert [r[5] for r in ring.run(["pending", 3])[0]] == [5, 2, 7]


def test_what_is_stored_reads_back_exactly_after_a_reboot(ring: RingDir) -> None:
    recs = [m(1718000000123 + i, value=0.1 * i) for i in range(5)]
    recs.append([1, 1, 3, 6, "firmware\tmodbus/b/9/level", 1718000009999, -2.5, 6.0,
                 0x10203])
    ring.run(["append", recs])
    got = ring.run(["pending", 100])[0]  # a new process: read from the files
    want = [[*r[:5], i + 1, *r[5:]] for i, r in enumerate(recs)]
    assert sorted(got, key=lambda r: r[5]) == want


def test_nothing_is_freed_before_confirm_and_seqs_survive_reboots(ring: RingDir) -> None:
    ring.run(["append", [m(i) for i in range(10)]])
    assert ring.state()["depth"] == 10  # rebooted: all still there
    assert ring.run(["deliver", 4]) == [6]
    state = ring.state()
    assert (state["depth"], state["last_seq"]) == (6, 10)
    assert [r[5] for r in ring.run(["pending", 100])[0]] == [5, 6, 7, 8, 9, 10]
    ring.run(["deliver", 100])
    state = ring.state()
    assert (state["depth"], state["last_seq"]) == (0, 10)  # nothing waits, the seq is kept
    assert ring.run(["append", [m(99)]]) == [[11]]  # never reused


def test_a_pubacked_record_is_held_until_the_collector_confirms_it(ring: RingDir) -> None:
    """Delivered means stored: the PUBACK marks records sent (not pending, still held); a
    confirmation frees exactly the seqs it names, sent or not yet sent."""
    sent, pending, state, more, freed, after, left, again = ring.run(
        ["append", [m(i) for i in range(10)]], ["send", 4], ["pending", 100], ["state"],
        ["send", 4], ["confirm", [[2, 3], [5, 5], [9, 9]]], ["state"], ["pending", 100],
        ["confirm", [[2, 3], [5, 5]]])[1:]
    assert sent == [1, 2, 3, 4]
    assert [r[5] for r in pending] == [5, 6, 7, 8, 9, 10]  # sent ones are not sent again
    assert (state["depth"], state["live"]) == (10, 6)  # but still held
    assert more == [5, 6, 7, 8]
    # 2, 3 sent first, 5 sent next, 9 never sent: all four freed, nothing else
    assert freed == 4 and (after["depth"], after["live"]) == (6, 1)
    assert [r[5] for r in left] == [10]  # 1, 4, 6, 7, 8 are sent and unconfirmed
    assert again == 0  # the same confirmation again (after a resend): nothing left to free
    # on flash: after a reboot the unconfirmed ones (1, 4, 6, 7, 8, 10) are all pending
    assert [r[5] for r in ring.run(["pending", 100])[0]] == [1, 4, 6, 7, 8, 10]


def test_resend_queues_what_is_held_and_names_what_is_not(ring: RingDir) -> None:
    ep = ring.state()["epoch"]
    even = [[q, q] for q in range(2, 81, 2)]
    out = ring.run(["append", [m(i) for i in range(80)]], ["send", 10], ["confirm", even],
                   ["resend", {"ep": ep, "first": 1, "last": 80}], ["pending", 100],
                   ["resend", {"ep": ep, "first": 75, "last": 200}],
                   ["resend", {"first": 1, "last": 5}],
                   ["resend", {"ep": ep, "first": 5, "last": 1}],
                   ["resend", {"ep": ep, "first": 1, "last": 5, "what": 1}])
    sent, freed = out[1], out[2]
    assert sent == list(range(1, 11)) and freed == 40
    # 40 odd seqs held (1, 3, 5, 7, 9 were sent: pending again now), 40 even ones confirmed:
    # 40 gaps, the lowest 32 named
    ok, error, answer = out[3]
    assert ok and error is None
    assert answer == {"resent": 40, "missing": even[:32], "truncated": True}
    assert [r[5] for r in out[4]] == list(range(1, 81, 2))
    # above the last seq assigned (80): neither resent nor missing, they do not exist yet
    assert out[5] == [True, None, {"resent": 3, "missing": [[76, 76], [78, 78], [80, 80]]}]
    # another epoch (here: none given, 0): none of it is held here
    assert out[6] == [True, None, {"resent": 0, "missing": [[1, 5]]}]
    assert out[7][0] is False and "first <= last" in out[7][1]
    assert out[8][0] is False and "unknown argument" in out[8][1]


def test_with_delete_on_puback_the_puback_frees(ring: RingDir) -> None:
    """For a broker without a firegate collector: the deletion point of before."""
    depth, state = ring.run(["append", [m(i) for i in range(6)]], ["puback", 4], ["state"])[1:]
    assert depth == 2 and (state["depth"], state["live"]) == (2, 2)
    assert [r[5] for r in ring.run(["pending", 100])[0]] == [5, 6]  # after a reboot too


def test_a_reboot_makes_sent_records_pending_again(ring: RingDir) -> None:
    """What was sent is in RAM only: after a power cut it is sent again (the collector drops
    what it already has and confirms it again)."""
    ring.run(["append", [m(i) for i in range(5)]], ["send", 5])
    state = ring.state()  # a new process: a reboot
    assert (state["depth"], state["live"]) == (5, 5)
    assert [r[5] for r in ring.run(["pending", 100])[0]] == [1, 2, 3, 4, 5]


def test_an_unconfirmed_record_is_pending_again_after_the_confirm_timeout(
        ring: RingDir) -> None:
    """age() is the timeout's clock (AGE_STEPS = 4 steps a timeout): a record sent in one
    step is pending again at the fifth step after it, between 1 and 1.25 timeouts later."""
    out = ring.run(["append", [m(i) for i in range(6)]], ["send", 2], ["age", 2], ["send", 2],
                   ["age", 2], ["pending", 100], ["age", 1], ["pending", 100], ["age", 2],
                   ["pending", 100], ["state"])
    first, second = out[1], out[3]
    assert (first, second) == ([1, 2], [3, 4])
    assert out[4] == [0, 0]  # 4 steps after the first send: not yet
    assert [r[5] for r in out[5]] == [5, 6]
    assert out[6] == [2]  # the fifth step: 1 and 2 are pending again
    assert [r[5] for r in out[7]] == [1, 2, 5, 6]
    assert out[8] == [0, 2]  # and 3, 4 at the fifth step after theirs
    assert [r[5] for r in out[9]] == [1, 2, 3, 4, 5, 6]
    assert (out[10]["depth"], out[10]["live"]) == (6, 6)
    # Sent again, confirmed: gone. Confirmed before its timeout: never pending again.
    out = ring.run(["send", 3], ["confirm", [[1, 3]]], ["age", 6], ["state"])
    assert out[1] == 3 and out[2] == [0] * 6 and out[3]["depth"] == 3


def test_a_sent_record_is_still_only_stored_and_evicted_like_a_live_one(
        ring: RingDir) -> None:
    cap = ring.state()["capacity"]
    ring.run(["append", [alarm(i) for i in range(10)]],
             ["append", [m(100 + i) for i in range(cap - 10)]])
    ring.run(["send", cap])  # everything PUBACKed, nothing confirmed
    out = ring.run(["append", [m(1000 + i) for i in range(5)]], ["state"], ["pending", 1000])
    assert out[1]["evicted"] == [0, 0, 0, 5] and out[1]["depth"] == cap
    # a reboot: every held record is pending; the five oldest measurements are gone
    held = sorted(r[5] for r in out[2])
    assert held == list(range(1, 11)) + list(range(16, cap + 6))


def test_a_full_ring_drops_measurements_oldest_first_and_alarms_last(ring: RingDir) -> None:
    cap = ring.state()["capacity"]
    assert cap == SEG_SLOTS  # 4 KB: one segment
    alarms = 60
    ring.run(["append", [alarm(i) for i in range(alarms)]],
             ["append", [m(100 + i) for i in range(cap - alarms)]])
    assert ring.state()["evicted"] == [0, 0, 0, 0]
    ring.run(["append", [m(1000 + i) for i in range(50)]])  # 50 more measurements
    state = ring.state()
    assert state["depth"] == cap
    assert state["evicted"] == [0, 0, 0, 50]  # fire, alarm, event, measurement
    live = ring.run(["pending", 1000])[0]
    assert sum(1 for r in live if r[1] == 1) == alarms  # every alarm kept
    kept = sorted(r[5] for r in live if r[1] == 3)
    assert kept == list(range(cap + 50 - (cap - alarms) + 1, cap + 51))  # the newest ones
    # alarms only when no measurement is left, oldest alarm first
    ring.run(["append", [alarm(5000 + i, prio=0) for i in range(cap - alarms + 5)]])
    state = ring.state()
    assert state["evicted"] == [0, 5, 0, 50 + cap - alarms]
    live = ring.run(["pending", 1000])[0]
    assert not [r for r in live if r[1] == 3]
    assert sorted(r[5] for r in live if r[1] == 1) == list(range(6, alarms + 1))


def test_a_torn_slot_is_counted_not_sent(ring: RingDir) -> None:
    ring.run(["append", [m(i) for i in range(5)]])
    seg = ring.path / "ring" / "s0"
    data = bytearray(seg.read_bytes())
    data[2 * SLOT + 20] ^= 0xFF  # a write cut short in the third slot
    seg.write_bytes(bytes(data))
    state = ring.state()
    assert state["depth"] == 4
    assert state["counters"] == {"torn_slots": 1}
    assert [r[5] for r in ring.run(["pending", 100])[0]] == [1, 2, 4, 5]


def test_a_cut_source_line_is_dropped_and_the_table_stays_usable(ring: RingDir) -> None:
    ring.run(["append", [m(1)]])
    src = ring.path / "ring" / "src"
    src.write_bytes(src.read_bytes() + b"firmware\tmodbus/b/2/pre")  # power cut mid-line
    other = "firmware\tmodbus/b/3/level"
    out = ring.run(["state"], ["append", [m(2, src=other)]], ["pending", 10])
    assert out[0]["counters"] == {"src_torn": 1}
    assert [r[4] for r in out[2]] == ["firmware\tmodbus/b/1/pressure", other]
    assert src.read_text() == f"firmware\tmodbus/b/1/pressure\n{other}\n"


def test_the_eviction_counters_and_geometry_survive_reboots(tmp_path: Path,
                                                           fw_build: Path) -> None:
    ring = RingDir(tmp_path, fw_build, kb=8)
    cap = ring.state()["capacity"]
    assert cap == 2 * SEG_SLOTS
    ring.run(["append", [m(i) for i in range(cap + 7)]])
    ring.kb = 4  # a smaller ring in the config: kept while records wait in the old one
    state = ring.state()
    assert (state["capacity"], state["evicted"]) == (cap, [0, 0, 0, 7])
    assert state["counters"] == {"resize_deferred": 1}
    ring.run(["deliver", 1000])
    state = ring.state()  # empty now: the new size is taken, the seq and counters carry over
    assert (state["capacity"], state["evicted"], state["last_seq"]) == (SEG_SLOTS,
                                                                        [0, 0, 0, 7], cap + 7)
    assert ring.run(["append", [m(1)]]) == [[cap + 8]]


def test_oldest_waiting_record(ring: RingDir) -> None:
    ring.run(["append", [m(500), alarm(300), m(700)]])
    assert ring.state()["oldest_rt"] == 500  # the lowest seq, whatever its class
    ring.run(["deliver", 2])  # the alarm and the first measurement
    assert ring.state()["oldest_rt"] == 700


def test_the_ring_has_an_epoch_for_its_life(ring: RingDir, tmp_path: Path) -> None:
    """Made with the ring, kept across reboots, new when the ring is new (flash.sh --config
    erases it): docs/wire-protocol.md, "Epochs"."""
    ring.run(["append", [m(1), m(2)]])
    epoch = ring.state()["epoch"]
    assert len(epoch) == 16 and int(epoch, 16) > 0 and int(epoch, 16) < 2**63
    assert ring.state()["epoch"] == epoch  # a reboot keeps it
    for name in ("meta", "src", "s0"):
        (tmp_path / "ring" / name).unlink()
    state = ring.state()  # a new ring: seqs start again, under a new epoch
    assert state["last_seq"] == 0 and state["epoch"] != epoch


def test_a_ring_from_before_epochs_gets_one_and_keeps_its_seqs(ring: RingDir,
                                                               tmp_path: Path) -> None:
    import struct

    def crc16(data: bytes) -> int:  # CRC-16/MODBUS, as fg.modbus.crc16 computes it
        crc = 0xFFFF
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        return crc

    ring.run(["append", [m(1), m(2), m(3)]])
    meta = tmp_path / "ring" / "meta"
    data = meta.read_bytes()[:40]
    v1 = b"FGR1" + data[4:32]  # the 32-byte meta of before: no epoch
    meta.write_bytes(v1 + struct.pack(">H", crc16(v1)))
    state = ring.state()
    assert state["last_seq"] == 3 and state["depth"] == 3 and int(state["epoch"], 16) > 0
    assert meta.read_bytes()[:4] == b"FGR2" and ring.state()["epoch"] == state["epoch"]
