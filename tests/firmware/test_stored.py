"""The firmware's check of the collector's ``stored`` confirmation (fg/stored.py), in real
MicroPython, held against the contract's own encoder and decoder (protocols/wire/stored.py).

All cases of a test go through one MicroPython process (stdin: a JSON list of cases), so that
hundreds of payloads cost one start-up. The payload is read from a buffer, as the uplink hands
it over (a slice of the batch buffer).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from protocols.wire import Stored, WireError, decode_stored, encode_stored

from .helpers import json_lines, run_mpy

OK, BAD, OTHER_EPOCH, OTHER_GATEWAY, TOO_LARGE = 0, 1, 2, 3, 4
MAX_RANGES = 64
GW = "pump-3fa2c9"
EP = 0x5F0C2A91D3B7E468

DRIVER = """
import json, sys
from fg import stored
cases = json.loads(sys.stdin.read())
buf = bytearray(8192)
for text, gw, ep in cases:
    data = text.encode()
    buf[:len(data)] = data
    print('OUT', json.dumps(stored.check(memoryview(buf)[:len(data)], gw, ep)))
"""


def parse_all(build: Path, cases: list[tuple[str, str, str]]) -> list[list[Any]]:
    out = run_mpy(DRIVER, build, stdin=json.dumps(cases), heap="1M", timeout=120)
    got = json_lines(out, "OUT")
    assert len(got) == len(cases)
    return got


def random_ranges(rng: random.Random) -> tuple[tuple[int, int], ...]:
    out = []
    at = rng.choice([1, rng.randrange(1, 10**6), rng.randrange(1, 2**53 - 10**6)])
    for _ in range(rng.choice([1, 1, 2, 5, 40, MAX_RANGES - 5])):  # x_note: 5 brackets
        first = at + rng.choice([0, 2, 7, 1000])
        last = first + rng.choice([0, 0, 1, 24, 5000])
        if last >= 2**53:
            break
        out.append((first, last))
        at = last + 2
    return tuple(out) or ((1, 1),)


def variants(stored: Stored, rng: random.Random) -> list[str]:
    """The contract's own encoding, and the same object as another JSON writer might put it:
    spaces and new lines, another key order, extension keys with awkward values."""
    compact = encode_stored(stored).decode()
    obj = json.loads(compact)
    keys = list(obj)
    rng.shuffle(keys)
    shuffled = {k: obj[k] for k in keys}
    shuffled["x_note"] = {"a": ["]}", "\"[{", 1.5e3, None, True], "b": {}}
    spaced = json.dumps(shuffled, indent=rng.choice([None, 1, 4]))
    return [compact, spaced, "\n " + json.dumps(obj, separators=(", ", " : ")) + " \r\n"]


def test_confirmations_read_as_the_contract_writes_them(fw_build: Path) -> None:
    rng = random.Random(18)
    cases: list[tuple[str, str, str]] = []
    want: list[tuple[tuple[int, int], ...]] = []
    for i in range(120):
        stored = Stored(GW, EP, random_ranges(rng), 1718000001500 + i,
                        rng.choice([None, "collector-1"]))
        for text in variants(stored, rng):
            assert decode_stored(text.encode()) == stored  # the contract takes every variant
            cases.append((text, GW, f"{EP:016x}"))
            want.append(stored.ranges)
    for (code, seqs), expected in zip(parse_all(fw_build, cases), want, strict=True):
        assert code == OK and seqs == [list(r) for r in expected]


def test_another_epoch_or_gateway_is_told_apart(fw_build: Path) -> None:
    mine = f"{EP:016x}"
    stored = encode_stored(Stored(GW, EP, ((1, 5),), 1)).decode()
    no_epoch = encode_stored(Stored(GW, 0, ((1, 5),), 1)).decode()  # epoch 0: no "ep" key
    assert '"ep"' not in no_epoch
    cases = [(stored, GW, mine), (stored, GW, f"{EP + 1:016x}"), (no_epoch, GW, mine),
             (stored, "pump-3fa2c8", mine), (stored, GW[:-1], mine)]
    assert [c[0] for c in parse_all(fw_build, cases)] == [OK, OTHER_EPOCH, OTHER_EPOCH,
                                                          OTHER_GATEWAY, OTHER_GATEWAY]


BAD_PAYLOADS = [
    "", " ", "[]", "{}", "null", '"x"', "1",
    '{"v":1,"gw":"G","ep":"E","seqs":[[1,2]],"ts":1',  # cut short
    '{"v":1,"gw":"G","ep":"E","seqs":[[1,2]],"ts":1}}',  # trailing data
    '{"v":1,"gw":"G","ep":"E","seqs":[[1,2]],"ts":1} x',
    '{"v":2,"gw":"G","ep":"E","seqs":[[1,2]],"ts":1}',  # another version
    '{"v":1.0,"gw":"G","ep":"E","seqs":[[1,2]],"ts":1}',
    '{"v":true,"gw":"G","ep":"E","seqs":[[1,2]],"ts":1}',
    '{"gw":"G","ep":"E","seqs":[[1,2]],"ts":1}',  # no v
    '{"v":1,"ep":"E","seqs":[[1,2]],"ts":1}',  # no gw
    '{"v":1,"gw":7,"ep":"E","seqs":[[1,2]],"ts":1}',
    '{"v":1,"gw":"G","ep":"E","ts":1}',  # no seqs
    '{"v":1,"gw":"G","ep":"E","seqs":[],"ts":1}',  # no range
    '{"v":1,"gw":"G","ep":"E","seqs":[[0,2]],"ts":1}',  # seq 0
    '{"v":1,"gw":"G","ep":"E","seqs":[[-1,2]],"ts":1}',
    '{"v":1,"gw":"G","ep":"E","seqs":[[3,2]],"ts":1}',  # first > last
    '{"v":1,"gw":"G","ep":"E","seqs":[[5,6],[1,2]],"ts":1}',  # not sorted
    '{"v":1,"gw":"G","ep":"E","seqs":[[1,3],[3,6]],"ts":1}',  # overlapping
    '{"v":1,"gw":"G","ep":"E","seqs":[[1,3],[4,6]],"ts":1}',  # adjacent
    '{"v":1,"gw":"G","ep":"E","seqs":[[1.0,2]],"ts":1}',
    '{"v":1,"gw":"G","ep":"E","seqs":[[true,2]],"ts":1}',
    '{"v":1,"gw":"G","ep":"E","seqs":[["1",2]],"ts":1}',
    '{"v":1,"gw":"G","ep":"E","seqs":[[1,2,3]],"ts":1}',
    '{"v":1,"gw":"G","ep":"E","seqs":[[1]],"ts":1}',
    '{"v":1,"gw":"G","ep":"E","seqs":[1,2],"ts":1}',
    '{"v":1,"gw":"G","ep":"E","seqs":{"1":2},"ts":1}',
    '{"v":1,"gw":"G","ep":"E","seqs":[[1,2]],"ts":1,"by":"unterminated}',
    '{"v":1,"gw":"G","ep":"E","seqs":[[1,2]],"ts":1,"x_a":[[[]}',
    '{"v":1,"gw":G,"ep":"E","seqs":[[1,2]],"ts":1}',
    "{" + '"x_a":' * 500,
]
# MicroPython's json reads a missing or extra comma and a leading zero as the evident meaning
# ({"v":1 "gw":...}, [[01,2]], [[1,2],]); the contract refuses them and the collector never
# writes them, and the firmware's checks of what they mean still hold.


def test_anything_else_is_refused(fw_build: Path) -> None:
    ep = f"{EP:016x}"
    cases = [(text.replace('"G"', f'"{GW}"').replace('"E"', f'"{ep}"'), GW, ep)
             for text in BAD_PAYLOADS]
    for text, _, _ in cases:  # the contract refuses them too
        with pytest.raises(WireError):
            decode_stored(text.encode())
    # Every proper prefix of a good confirmation is refused as well.
    good = json.dumps(json.loads(encode_stored(Stored(GW, EP, ((1, 4), (7, 9)), 5, "c-1"))),
                      indent=1) + "\n"
    assert decode_stored(good.encode()).ranges == ((1, 4), (7, 9))
    cases += [(good[:k], GW, ep) for k in range(len(good.rstrip()))]
    got = parse_all(fw_build, cases)
    for (text, _, _), result in zip(cases, got, strict=True):
        assert result == [BAD, None], text[:80]


def bracket_heavy(ranges: int) -> str:
    """A confirmation of ``ranges`` single seqs, every other one: the most ranges per byte."""
    return encode_stored(Stored(GW, EP, tuple((s, s) for s in range(1_000_001,
                                                                    1_000_001 + 2 * ranges, 2)),
                                1718000001500, "collector-1")).decode()


def test_more_ranges_than_the_node_takes_are_refused_unparsed(fw_build: Path) -> None:
    """MAX_RANGES (64) is what json.loads may build; more is refused before it runs, also
    when the brackets hide in an extension key or a string: never more, only less."""
    ep = f"{EP:016x}"
    at_limit, over = bracket_heavy(MAX_RANGES), bracket_heavy(MAX_RANGES + 1)
    nested = at_limit[:-1] + ',"x_deep":' + "[" * 9 + "]" * 9 + "}"
    quoted = at_limit[:-1] + ',"x_text":"' + "[" * 9 + '"}'
    got = parse_all(fw_build, [(at_limit, GW, ep), (over, GW, ep), (nested, GW, ep),
                               (quoted, GW, ep), ("[" * 3000, GW, ep)])
    assert got[0][0] == OK and len(got[0][1]) == MAX_RANGES
    assert [c for c, _ in got[1:]] == [TOO_LARGE] * 4
    assert decode_stored(nested.encode()) and decode_stored(quoted.encode())  # valid, though


def test_the_heap_a_confirmation_costs_is_bounded(fw_build: Path) -> None:
    """The largest confirmation the node parses costs a few KB while it is checked; a refused
    one costs nothing: what json.loads would build is bounded before it runs."""
    code = f"""
import gc, json
from fg import stored
def cost(text):
    data = bytearray(text)
    mv = memoryview(data)
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    result = stored.check(mv, {GW!r}, {f"{EP:016x}"!r})
    b = gc.mem_alloc()
    gc.enable()
    return [result[0], b - a]
print('OUT', json.dumps([cost({bracket_heavy(MAX_RANGES).encode()!r}),
                         cost({bracket_heavy(3).encode()!r}),
                         cost({("[" * 3000).encode()!r})]))
"""
    (result,) = json_lines(run_mpy(code, fw_build, heap="1M"), "OUT")
    (top, top_cost), (usual, usual_cost), (hostile, hostile_cost) = result
    assert (top, usual, hostile) == (OK, OK, TOO_LARGE)
    # 64-bit unix port: ~76 bytes a range, and the dict of the object
    assert top_cost <= 90 * MAX_RANGES + 1024, top_cost
    assert usual_cost <= 1024, usual_cost
    assert hostile_cost <= 128, hostile_cost
