"""Contacts in the firmware: FC1/FC2 frames as pymodbus builds them, the contact table
provisioning writes from ``protocols.registers``, and a config.json with bad contact rows.

Each comparison runs the firmware's own code in real MicroPython (the unix port) against an
independent CPython implementation: pymodbus for the frames, ``BitPoint`` for the table.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    ReadDiscreteInputsResponse,
)

from firegate.provision import (
    FIRMWARE_CONTACT_FIELDS,
    FIRMWARE_EVENT_TYPES,
    firmware_device,
    load_site,
    provision,
)
from protocols.registers import PROFILES, BitBlock, Channel, Meaning, ReadBlock, get_profile
from protocols.wire import DEFAULT_PRIORITY

from .helpers import HEAP, MICROPYTHON, json_lines, run_mpy


def test_fc1_fc2_frames_match_pymodbus(fw_build: Path) -> None:
    """Requests byte for byte pymodbus's (RTU CRC, TCP MBAP) for 1..2000 bits; pymodbus's
    replies decode bit for bit (the first coil is bit 0 of the first byte, V1.1b3 §6.1); a
    corrupted, cut or wrongly counted reply is refused."""
    rng = random.Random(17)
    rtu, tcp = FramerRTU(DecodePDU(False)), FramerSocket(DecodePDU(False))
    reqs, frames = [], []
    for _ in range(40):
        unit, fn = rng.randint(1, 247), rng.choice((1, 2))
        start = rng.randint(0, 63000)
        count = rng.choice((1, 7, 8, 9, 16, 17, 2000, rng.randint(1, 2000)))
        tid = rng.randint(1, 65535)
        cls = ReadCoilsRequest if fn == 1 else ReadDiscreteInputsRequest
        req = cls(address=start, count=count, dev_id=unit)
        req.transaction_id = tid
        reqs.append([unit, fn, start, count, tid])
        frames.append([rtu.buildFrame(req).hex(), tcp.buildFrame(req).hex()])
    srv_rtu, srv_tcp = FramerRTU(DecodePDU(True)), FramerSocket(DecodePDU(True))
    replies = []
    for i in range(40):
        unit, fn = rng.randint(1, 247), rng.choice((1, 2))
        count = rng.choice((1, 5, 8, 9, 15, 16, 33, rng.randint(1, 300)))
        bits = [rng.random() < 0.5 for _ in range(count)]
        cls2 = ReadCoilsResponse if fn == 1 else ReadDiscreteInputsResponse
        resp = cls2(bits=bits, dev_id=unit)
        resp.transaction_id = i + 1
        replies.append([unit, fn, count, srv_rtu.buildFrame(resp).hex(),
                        srv_tcp.buildFrame(resp).hex(), i + 1, [int(b) for b in bits]])
    exc = ExceptionResponse(2, 2, device_id=9)
    code = ("import json, sys, binascii\nfrom fg import modbus\nfrom fg.contacts import bit\n"
            "reqs, replies, exc = json.loads(sys.stdin.read())\n"
            "h = lambda b: binascii.hexlify(b).decode()\n"
            "for u, fn, s, c, tid in reqs:\n"
            "    print('R', json.dumps([h(modbus.rtu_request(u, fn, s, c)), "
            "h(modbus.tcp_request(tid, u, fn, s, c))]))\n"
            "def bits(res, c):\n"
            "    return [res[0], [bit(res[1], i) for i in range(c)]] if res[0] == 0 else res\n"
            "for u, fn, c, r, t, tid, want in replies:\n"
            "    r, t = binascii.unhexlify(r), binascii.unhexlify(t)\n"
            "    bad = bytearray(r); bad[3] ^= 1\n"
            "    print('P', json.dumps([bits(modbus.rtu_check(r, u, fn, c), c), "
            "bits(modbus.tcp_check(t, tid, u, fn, c), c), modbus.rtu_check(bad, u, fn, c), "
            "modbus.rtu_check(r[:-1], u, fn, c), modbus.rtu_check(r, u, fn, c + 8)[0]]))\n"
            "print('E', json.dumps(modbus.rtu_check(binascii.unhexlify(exc), 9, 2, 1)))\n")
    stdin = json.dumps([reqs, replies, rtu.buildFrame(exc).hex()])
    out = run_mpy(code, fw_build, stdin=stdin, heap="4M")
    assert json_lines(out, "R") == frames
    decoded = json_lines(out, "P")
    assert len(decoded) == len(replies)
    for (ok_rtu, ok_tcp, bad, short, wrong_count), reply in zip(decoded, replies, strict=True):
        assert ok_rtu == [0, reply[6]] and ok_tcp == [0, reply[6]]
        assert bad == [3, "bad CRC"]
        assert short == [None, None]  # incomplete: wait for more bytes
        assert wrong_count == 3  # BAD_REPLY: a byte count that does not fit the request
    assert json_lines(out, "E") == [[2, 2]]  # EXCEPTION, code 2


def _rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(zip(FIRMWARE_CONTACT_FIELDS, row, strict=True)) for row in table["contacts"]]


@pytest.mark.parametrize("key", sorted(k for k, p in PROFILES.items()
                                       if p.bit_points or p.bank is not None))
def test_the_contact_table_is_generated_from_registers_py(key: str) -> None:
    """Every contact of every built-in contact profile (a DI module's with channels
    assigned), field for field: where its bit lies in the reads the edge driver plans, how it
    reads, what it raises at which priority, its texts."""
    profile = get_profile(key)
    if profile.bank is not None:
        profile = profile.with_channels({
            1: Channel(Meaning.VALVE, "drain valve"),
            2: Channel(Meaning.RUN, "jockey pump", invert=True),
            profile.bank.count: Channel(Meaning.VALVE, "test valve", normal=False)})
    table = firmware_device(profile, name="dev")
    reads = [*profile.read_blocks(), *profile.bit_blocks()]
    assert len(table["blocks"]) == len(reads)
    rows = _rows(table)
    assert [r["name"] for r in rows] == [b.name for b in profile.bit_points]
    for b, r in zip(profile.bit_points, rows, strict=True):
        block = reads[r["block"]]
        fn, start, count = table["blocks"][r["block"]]
        function = (block.table if isinstance(block, BitBlock) else block.register_type
                    ).read_function
        assert (fn, start, count) == (function, block.start, block.count)
        assert block.table is b.table if isinstance(block, BitBlock) else \
            block.register_type is b.table
        assert start + r["at"] == b.address and 0 <= r["at"] < count
        assert r["bit"] == (-1 if b.bit is None else b.bit)
        assert (r["invert"], r["normal"]) == (b.invert, b.normal_state)
        assert FIRMWARE_EVENT_TYPES[r["event"]] is b.event_type
        assert r["priority"] == int(DEFAULT_PRIORITY[b.event_type])
        assert r["states"] == list(b.spec.states)
        assert r["channel"] == (-1 if b.channel is None else b.channel)
        assert r["desc"] == (b.description or "dev")
    if key == "di-8":
        assert [(r["name"], r["invert"], r["normal"]) for r in rows] == [
            ("ch1", False, True), ("ch2", True, False), ("ch8", False, False)]
        assert table["blocks"] == [[2, 0, 8]]  # DI1..DI8 in one read (bit_gap 7)


def test_decoding_in_micropython_matches_decode_bits(fw_build: Path) -> None:
    """For random raw words and bit strings, the firmware's reading of each contact (bit,
    invert) is ``DeviceProfile.decode_bits``'s logical state."""
    rng = random.Random(5)
    cases, expected = [], []
    for key in ("valve-4", "fire-pump", "di-16"):
        profile = get_profile(key)
        if profile.bank is not None:
            profile = profile.with_channels({n: Channel(Meaning.SUPERVISORY, invert=n % 3 == 0)
                                             for n in range(1, 17)})
        table = firmware_device(profile)
        reads: list[ReadBlock | BitBlock] = [*profile.read_blocks(), *profile.bit_blocks()]
        for _ in range(20):
            values: list[Any] = []
            want: dict[str, bool] = {}
            for read in reads:
                if isinstance(read, BitBlock):
                    bits = [rng.random() < 0.5 for _ in range(read.count)]
                    values.append(bits)
                    want.update(profile.decode_bits(read, bits))
                else:
                    regs = [rng.randint(0, 0xFFFF) for _ in range(read.count)]
                    values.append(regs)
                    want.update(profile.decode_bits(read, regs))
            cases.append([table["contacts"], table["blocks"], values])
            expected.append([want[b.name] for b in profile.bit_points])
    code = ("import json, sys\nfrom fg.contacts import bit\n"
            "fields, cases = json.loads(sys.stdin.read())\n"
            "ix = {n: i for i, n in enumerate(fields)}\n"
            "for rows, blocks, values in cases:\n"
            "    data = []\n"
            "    for (fn, s, c), v in zip(blocks, values):\n"
            "        if fn < 3:\n"
            "            b = bytearray((c + 7) // 8)\n"
            "            for i, on in enumerate(v):\n"
            "                if on:\n"
            "                    b[i >> 3] |= 1 << (i & 7)\n"
            "            data.append(bytes(b))\n"
            "        else:\n"
            "            data.append(tuple(v))\n"
            "    out = []\n"
            "    for r in rows:\n"
            "        d = data[r[ix['block']]]\n"
            "        raw = bit(d, r[ix['at']]) if r[ix['bit']] < 0 else "
            "d[r[ix['at']]] >> r[ix['bit']] & 1\n"
            "        out.append(bool(raw) != r[ix['invert']])\n"
            "    print('S', json.dumps(out))\n")
    got = json_lines(run_mpy(code, fw_build, stdin=json.dumps([FIRMWARE_CONTACT_FIELDS, cases]),
                             heap="4M"), "S")
    assert got == expected
    assert any(any(e) for e in expected) and any(not all(e) for e in expected)


def _config(tmp: Path) -> str:
    site = tmp / "site.toml"
    site.write_text(
        '[site]\nid = "s"\n[uplink]\nurl = "mqtt://127.0.0.1:1883"\n[[modbus]]\nname = "b"\n'
        'port = "/dev/null"\n[[modbus.device]]\nunit = 1\nprofile = "valve-4"\n')
    return provision(load_site(site), "firmware").files["config.json"][0].decode()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["modbus"]["devices"][0]["contacts"][0].__setitem__(1, 7),
     "modbus.devices[0].contacts[0]: lies outside its device's reads"),
    (lambda c: c["modbus"]["devices"][0]["contacts"][1].pop(),
     "modbus.devices[0].contacts[1]: must be a row of 11 values (modbus.contact_fields)"),
    (lambda c: c["modbus"]["devices"][0]["contacts"][2].__setitem__(4, 1),
     "modbus.devices[0].contacts[2].invert: must be bool"),
    (lambda c: c["modbus"]["devices"][0].pop("debounce_ms"),
     "modbus.devices[0].debounce_ms: is required"),
    (lambda c: c["modbus"].pop("contact_fields"), "modbus.contact_fields: is required"),
    (lambda c: c["modbus"]["devices"][0]["contacts"][3].__setitem__(8, ["open"]),
     "modbus.devices[0].contacts[3].states: must name the two states"),
])
def test_a_bad_contact_row_stops_the_firmware_naming_the_key(
        tmp_path: Path, fw_build: Path, edit: Any, message: str) -> None:
    node = tmp_path / "node"
    shutil.copytree(fw_build, node)
    cfg = json.loads(_config(tmp_path))
    assert [r[0] for r in cfg["modbus"]["devices"][0]["contacts"]] == [
        "valve_1", "valve_2", "valve_3", "valve_4"]
    edit(cfg)
    (node / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.run([MICROPYTHON, "-X", f"heapsize={HEAP}", "main.py", "config.json"],
                          cwd=node, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stdout


def test_a_bus_without_contacts_carries_no_contact_keys(tmp_path: Path) -> None:
    """A node without contacts keeps no contact table in its heap."""
    site = tmp_path / "site.toml"
    site.write_text('[site]\nid = "s"\n[uplink]\nurl = "mqtt://127.0.0.1:1883"\n[[modbus]]\n'
                    'name = "b"\nport = "/dev/null"\n[[modbus.device]]\nunit = 1\n'
                    'profile = "level"\n')
    cfg = json.loads(provision(load_site(site), "firmware").files["config.json"][0])
    assert "contact_fields" not in cfg["modbus"]
    assert "contacts" not in cfg["modbus"]["devices"][0]
    assert "debounce_ms" not in cfg["modbus"]["devices"][0]
    assert json.loads(_config(tmp_path))["modbus"]["devices"][0]["debounce_ms"] == 500
