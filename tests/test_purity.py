"""protocols/ is sans-I/O: importing it loads no module that does network, serial, process,
thread, database or event-loop I/O. Checked in a fresh interpreter, so other tests' imports
cannot hide a regression."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = {
    "socket", "ssl", "select", "selectors", "asyncio", "threading", "_thread", "subprocess",
    "multiprocessing", "concurrent", "sqlite3", "http", "urllib", "serial", "paho", "pymodbus",
    "bleak", "aiosqlite", "influxdb_client", "typer", "rich", "signal", "mmap",
}
ROOT = Path(__file__).resolve().parent.parent


def _imported_by(modules: list[str]) -> set[str]:
    code = ("import sys, json; base = set(sys.modules); "
            + "; ".join(f"import {m}" for m in modules)
            + "; print(json.dumps(sorted(set(sys.modules) - base)))")
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(ROOT)})
    return set(json.loads(out.stdout))


def _packages() -> list[str]:
    mods = []
    for path in sorted((ROOT / "protocols").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        mods.append(".".join(parts))
    return mods


def test_protocols_import_no_io_modules() -> None:
    modules = _packages()
    assert "protocols.gb26875.stream" in modules and len(modules) > 10
    loaded = _imported_by(modules)
    bad = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert bad == [], f"protocols/ pulls in I/O modules: {bad}"


def test_the_check_catches_an_io_import() -> None:
    assert "socket" in _imported_by(["socket"])
