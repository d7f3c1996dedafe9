"""The firmware computes what CPython computes: register maps, values, frames and rules.

Each test runs the firmware's own code in real MicroPython (the unix port; with a large heap
here, because the test feeds hundreds of cases at once) and compares it with an independent
CPython implementation: ``protocols.registers`` and the edge agent's Modbus driver for values,
pymodbus for Modbus frames, the agent's ``RuleEngine`` for threshold rules.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
)

from edge.config.rules import RuleConfig
from edge.drivers.modbus import _tidy
from edge.rules import RuleEngine
from firegate.provision import FIRMWARE_POINT_FIELDS, firmware_device
from protocols.registers import (
    PROFILES,
    DataType,
    DeviceProfile,
    PointSpec,
    RegisterError,
    RegisterType,
    Unit,
    WordOrder,
    convert,
)
from protocols.wire import Bus, Event, Measurement, Priority, Quantity, Source

from .helpers import json_lines, run_mpy

POINT_FIELDS = ("name", "quantity", "unit", "register_type", "address", "data_type",
                "word_order", "scale", "offset", "minimum", "maximum")


@pytest.mark.parametrize("key", sorted(PROFILES))
def test_the_firmware_profile_table_is_generated_from_registers_py(key: str) -> None:
    """What provisioning writes for the firmware is the PointSpec of protocols/registers.py,
    field for field, with the same read blocks and the edge driver's rounding."""
    profile = PROFILES[key]
    table = firmware_device(profile)
    table["points"] = [dict(zip(FIRMWARE_POINT_FIELDS, row, strict=True))
                       for row in table["points"]]
    assert table["blocks"] == [[b.register_type.read_function, b.start, b.count]
                               for b in profile.read_blocks()] + [
        [b.table.read_function, b.start, b.count] for b in profile.bit_blocks()]
    assert len(table["points"]) == len(profile.points)
    for p, t in zip(profile.points, table["points"], strict=True):
        for name in POINT_FIELDS:
            want = getattr(p, name)
            assert t[name] == getattr(want, "value", want), (key, p.name, name)
        assert t["decimals"] == p.decimals  # what the edge driver rounds to
        assert t["factor"] == p.factor == convert(1.0, p.unit, p.canonical_unit)
        block = profile.read_blocks()[t["block"]]
        assert block.register_type is p.register_type
        assert block.start + t["at"] == p.address
    assert [w["name"] for w in table["status"]] == [w.name for w in profile.status_words]
    for w, t in zip(profile.status_words, table["status"], strict=True):
        assert [b[:2] for b in t["bits"]] == [[n, name] for n, name in sorted(w.bits.items())]
        assert profile.read_blocks()[t["block"]].start + t["at"] == w.address


def test_rounding_and_fault_coverage_provisioning_shares_with_the_edge_driver() -> None:
    """``PointSpec.decimals`` and ``DeviceProfile.covered_by``, which the edge driver and
    provisioning both use, on the built-in maps: the resolution of scale and offset in the
    canonical unit; ``<x>_fault`` covers ``<x>`` and ``<x>_*``, another fault bit everything."""
    decimals = {(k, p.name): p.decimals for k, prof in PROFILES.items() for p in prof.points}
    assert decimals[("pressure-a", "pressure")] == 3  # 1 kPa in MPa
    assert decimals[("pressure-b", "pressure")] is None  # f32: significant digits instead
    assert decimals[("pressure-c", "pressure")] == 6  # 1 Pa in MPa
    assert decimals[("level-cm", "level")] == 2  # 1 cm, offset 0.20 m
    assert decimals[("elec-fire", "temperature_1")] == 1
    assert decimals[("elec-fire", "residual_current")] == 0
    efd = PROFILES["elec-fire"]
    temps = ("temperature_1", "temperature_2", "temperature_3", "temperature_4")
    assert efd.covered_by("temperature_fault") == temps
    assert efd.covered_by("residual_current_fault") == ("residual_current",)
    assert efd.covered_by("cable_fault") == ("residual_current", *temps)  # names no point
    assert PROFILES["pressure-b"].covered_by("loop_open") == ("pressure",)
    bits = {b[1]: b[2:] for b in firmware_device(efd)["status"][0]["bits"]}
    assert bits == {"residual_current_alarm": [True, [0, 1, 2, 3, 4]],
                    "temperature_alarm": [True, [0, 1, 2, 3, 4]],
                    "residual_current_fault": [False, [0]],
                    "temperature_fault": [False, [1, 2, 3, 4]]}


def _samples(p: PointSpec, rng: random.Random) -> list[float]:
    span = p.maximum - p.minimum
    values = [p.minimum, p.maximum, (p.minimum + p.maximum) / 2, p.maximum + span,
              p.minimum - span, 1e9, -1e9]
    values += [rng.uniform(p.minimum, p.maximum) for _ in range(12)]
    return values


def test_register_values_decode_as_on_the_edge(fw_build: Path) -> None:
    """Every point of every built-in profile: registers laid out by protocols/registers.py,
    decoded by the firmware, equal the edge driver's value (canonical unit, rounded)."""
    rng = random.Random(26875)
    cases, expected = [], []
    for key in sorted(PROFILES):
        profile = PROFILES[key]
        table = firmware_device(profile)
        blocks = profile.read_blocks()
        for p, row in zip(profile.points, table["points"], strict=True):
            t = dict(zip(FIRMWARE_POINT_FIELDS, row, strict=True))
            for value in _samples(p, rng):
                regs = [0] * blocks[t["block"]].count
                regs[t["at"]:t["at"] + p.register_count] = p.encode(value, saturate=True)
                physical = p.decode(regs[t["at"]:t["at"] + p.register_count])
                canonical = _tidy(convert(physical, p.unit, p.canonical_unit), p.decimals)
                cases.append([row, regs])
                expected.append((physical, canonical, f"{key}/{p.name}={value}"))
    code = ("import json, sys\nfrom fg.points import point, physical, canonical, columns\n"
            "fields, cases = json.loads(sys.stdin.read())\n"
            "ix = columns(fields)\n"
            "for row, regs in cases:\n"
            "    p = point(row, ix, 'modbus/b/1', 'd')\n"
            "    v = physical(p, regs)\n"
            "    print('V', json.dumps([v, canonical(p, v)]))\n")
    stdin = json.dumps([FIRMWARE_POINT_FIELDS, cases])
    got = json_lines(run_mpy(code, fw_build, stdin=stdin, heap="4M"), "V")
    assert len(got) == len(expected)
    for (phys, canon), (want_phys, want_canon, what) in zip(got, expected, strict=True):
        assert math.isclose(phys, want_phys, rel_tol=1e-12, abs_tol=1e-12), what
        assert math.isclose(canon, want_canon, rel_tol=1e-12, abs_tol=0.0), what


def test_data_types_and_word_orders(fw_build: Path) -> None:
    """Signs, 32-bit halves and float layouts, both word orders, at the types' limits."""
    cases, expected = [], []
    for dt in DataType:
        for order in WordOrder:
            p = PointSpec("x", Quantity.PRESSURE, Unit.MPA, RegisterType.HOLDING, 0, dt,
                          minimum=-1e40, maximum=1e40, word_order=order)
            table = firmware_device(DeviceProfile("t", "t", "t", (p,)))["points"][0]
            for raw in (0, 1, -1, 32767, -32768, 65535, 2**31 - 1, -(2**31), 2**32 - 1, 1.5,
                        -273.15, 3.4e38):
                try:
                    regs = p.encode(raw)
                except RegisterError:
                    continue  # not a value of this type
                cases.append([table, regs])
                expected.append(p.decode(regs))
    code = ("import json, sys\nfrom fg.points import point, physical, columns\n"
            "fields, cases = json.loads(sys.stdin.read())\n"
            "for row, regs in cases:\n"
            "    print('V', json.dumps(physical(point(row, columns(fields), 'b', 'd'), regs)))\n")
    stdin = json.dumps([FIRMWARE_POINT_FIELDS, cases])
    got = json_lines(run_mpy(code, fw_build, stdin=stdin, heap="4M"), "V")
    assert len(got) == len(expected) > 40
    for g, want in zip(got, expected, strict=True):
        assert math.isclose(g, want, rel_tol=1e-7), (g, want)


def test_modbus_frames_match_pymodbus(fw_build: Path) -> None:
    """Requests the firmware builds are byte for byte pymodbus's (RTU with CRC-16, TCP with
    MBAP); replies pymodbus builds are decoded, and a corrupted one is refused."""
    rng = random.Random(3)
    reqs, frames = [], []
    rtu, tcp = FramerRTU(DecodePDU(False)), FramerSocket(DecodePDU(False))
    for _ in range(50):
        unit, fn = rng.randint(1, 247), rng.choice((3, 4))
        start, count, tid = rng.randint(0, 65000), rng.randint(1, 125), rng.randint(1, 65535)
        cls = ReadHoldingRegistersRequest if fn == 3 else ReadInputRegistersRequest
        req = cls(address=start, count=count, dev_id=unit)
        req.transaction_id = tid
        reqs.append([unit, fn, start, count, tid])
        frames.append([rtu.buildFrame(req).hex(), tcp.buildFrame(req).hex()])
    srv_rtu, srv_tcp = FramerRTU(DecodePDU(True)), FramerSocket(DecodePDU(True))
    replies = []
    for i in range(30):
        unit, fn, count = rng.randint(1, 247), rng.choice((3, 4)), rng.randint(1, 20)
        regs = [rng.randint(0, 65535) for _ in range(count)]
        resp = (ReadHoldingRegistersResponse if fn == 3 else ReadInputRegistersResponse)(
            registers=regs, dev_id=unit)
        resp.transaction_id = i + 1
        replies.append([unit, fn, count, srv_rtu.buildFrame(resp).hex(),
                        srv_tcp.buildFrame(resp).hex(), i + 1, regs])
    exc = ExceptionResponse(4, 2, device_id=9)
    code = ("import json, sys, binascii\nfrom fg import modbus\n"
            "reqs, replies, exc = json.loads(sys.stdin.read())\n"
            "h = lambda b: binascii.hexlify(b).decode()\n"
            "for u, fn, s, c, tid in reqs:\n"
            "    print('R', json.dumps([h(modbus.rtu_request(u, fn, s, c)), "
            "h(modbus.tcp_request(tid, u, fn, s, c))]))\n"
            "for u, fn, c, r, t, tid, regs in replies:\n"
            "    r, t = binascii.unhexlify(r), binascii.unhexlify(t)\n"
            "    bad = bytearray(r); bad[3] ^= 1\n"
            "    print('P', json.dumps([modbus.rtu_check(r, u, fn, c), "
            "modbus.tcp_check(t, tid, u, fn, c), modbus.rtu_check(bad, u, fn, c), "
            "modbus.rtu_check(r[:-1], u, fn, c)]))\n"
            "print('E', json.dumps(modbus.rtu_check(binascii.unhexlify(exc), 9, 4, 1)))\n")
    stdin = json.dumps([reqs, replies, rtu.buildFrame(exc).hex()])
    out = run_mpy(code, fw_build, stdin=stdin, heap="4M")
    assert json_lines(out, "R") == frames
    for (ok_rtu, ok_tcp, bad, short), reply in zip(json_lines(out, "P"), replies, strict=True):
        assert ok_rtu == [0, reply[6]] and ok_tcp == [0, reply[6]]
        assert bad == [3, "bad CRC"]
        assert short == [None, None]  # incomplete: wait for more bytes
    assert json_lines(out, "E") == [[2, 2]]  # EXCEPTION, code 2


def _rule_cases(rng: random.Random) -> list[tuple[RuleConfig, list[tuple[str, float, int]]]]:
    cases = []
    for i in range(60):
        low = rng.choice([None, 0.15, 2.0])
        high = rng.choice([None, 0.8, 5.0]) if low is not None else rng.choice([0.8, 5.0])
        if low is not None and high is not None and high <= low:
            high = low + 3.0
        hyst = rng.choice([0.0, 0.02, 0.1])
        if low is not None and high is not None:
            hyst = min(hyst, (high - low) / 2 - 0.01)
        rule = RuleConfig(f"r{i}", "*", low, high, hyst, rng.choice([0.0, 1.0, 10.0]),
                          rng.choice([None, 0.05]), rng.choice([None, 30.0]),
                          rng.choice([Priority.ALARM, Priority.FIRE]), None)
        ms, steps = 1_718_000_000_000, []
        centre = low if low is not None else high
        assert centre is not None
        for _ in range(80):
            ms += rng.choice([100, 500, 1000, 3000, 12000])
            if rng.random() < 0.2:
                steps.append(("t", 0.0, ms))
            else:
                steps.append(("m", round(centre + rng.uniform(-0.3, 0.3) * max(1, centre),
                                          4), ms))
        cases.append((rule, steps))
    return cases


def test_threshold_rules_match_the_edge_rule_engine(fw_build: Path) -> None:
    """Low/high limits, hysteresis, debounce (maturing between samples), deadband: the
    firmware's events (type, raise/restore, value, limit, time, text) and the measurements it
    sends are the agent's, for random sample sequences."""
    cases = _rule_cases(random.Random(11))
    src = Source("modbus/b/1/pressure", Bus.MODBUS, description="d")
    expected = []
    for rule, steps in cases:
        engine = RuleEngine([rule])
        out = []
        for kind, value, ms in steps:
            if kind == "t":
                recs = engine.tick(ms)
            else:
                recs = engine.process([Measurement(source=src, quantity=Quantity.PRESSURE,
                                                   value=value, unit="MPa", receive_ms=ms)])
            for r in recs:
                if isinstance(r, Event):
                    out.append(["e", r.type.value, r.active, r.value, r.limit, r.receive_ms,
                                r.detail, int(r.priority)])
                else:
                    out.append(["m", r.value, r.receive_ms])
        expected.append(out)
    payload = [[{"name": r.name, "low": r.low, "high": r.high, "hysteresis": r.hysteresis,
                 "debounce_s": r.debounce_s, "deadband": r.deadband,
                 "report_interval_s": r.report_interval_s, "priority": int(r.priority)},
                steps] for r, steps in cases]
    code = ("import json, sys\nfrom fg import rules, records, texts\n"
            "for rule, steps in json.loads(sys.stdin.read()):\n"
            "    s = rules.Sensor(rule, 'MPa', [])\n"
            "    out = []\n"
            "    for kind, value, ms in steps:\n"
            "        evs = []\n"
            "        if kind == 't':\n"
            "            s.tick(ms, evs)\n"
            "        elif s.sample(value, ms, evs):\n"
            "            out.append(['m', value, ms])\n"
            "        for k, on, v, lim, t in evs:\n"
            "            out.append(['e', records.EVENT_TYPES[k], on, v, lim, t, "
            "texts.rule_detail(rule, k, on, v, 'MPa'), rule['priority']])\n"
            "    print('O', json.dumps(out))\n")
    got = json_lines(run_mpy(code, fw_build, stdin=json.dumps(payload), heap="4M"), "O")
    assert got == expected
    assert sum(1 for out in expected for r in out if r[0] == "e") > 50  # rules did fire
