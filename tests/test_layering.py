"""The house keeps its floors (docs/architecture.md).

* ``firegate/`` (the command line, the demo, provisioning) is the only package that imports
  more than one runtime.
* ``edge/``, ``collector/`` and ``simulators/`` are siblings: none imports another, nor the top
  floor, nor the command-line libraries (typer, click, rich).
* They share ``protocols/`` (pure) and ``common/`` (standard library only); ``protocols/``
  imports no other firegate package, ``common/`` none at all.

Checked twice: statically, every ``import`` statement of every module, lazy ones inside
functions included; and dynamically, importing every module of a runtime in a fresh
interpreter (which also sees ``importlib.import_module`` and what third-party code pulls in).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocols", "common", "edge", "collector", "simulators", "firegate")
CLI_LIBRARIES = ("typer", "click", "rich")

ALLOWED: dict[str, set[str]] = {
    "protocols": {"protocols"},
    "common": {"common"},
    "edge": {"edge", "protocols", "common"},
    "collector": {"collector", "protocols", "common"},
    "simulators": {"simulators", "protocols", "common"},
    "firegate": set(PACKAGES) | set(CLI_LIBRARIES),
}
RUNTIMES = ("edge", "collector", "simulators")


def _modules(package: str) -> list[str]:
    mods = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = [p for p in path.relative_to(ROOT).with_suffix("").parts if p != "__init__"]
        if parts[-1] != "__main__":  # running it is the point of a __main__
            mods.append(".".join(parts))
    return mods


def static_imports(path: Path) -> set[str]:
    """The top-level names of every absolute import in a file, wherever it sits."""
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            tops |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def violations(package: str) -> list[str]:
    watched = set(PACKAGES) | set(CLI_LIBRARIES)
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for top in sorted(static_imports(path) & watched - ALLOWED[package]):
            bad.append(f"{path.relative_to(ROOT)} imports {top}")
    return bad


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_floors_below_it(package: str) -> None:
    assert len(_modules(package)) > 2
    assert violations(package) == []


def test_the_static_check_sees_a_lazy_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from collector.app import Collector\n    import typer\n")
    assert static_imports(probe) == {"collector", "typer"}


def _loaded_by(modules: list[str]) -> set[str]:
    code = ("import sys, json; base = set(sys.modules); "
            + "; ".join(f"import {m}" for m in modules)
            + "; print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - base})))")
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(ROOT)}, timeout=120)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_runtime_loads_no_sibling_and_no_command_line(runtime: str) -> None:
    # Every module except the optional-extra ones that need a D-Bus or BLE stack to import.
    modules = [m for m in _modules(runtime) if not m.startswith("simulators.ble.")]
    loaded = _loaded_by(modules)
    assert runtime in loaded
    others = set(PACKAGES) - ALLOWED[runtime]
    assert sorted(loaded & (others | set(CLI_LIBRARIES))) == []


def test_the_dynamic_check_sees_the_command_line() -> None:
    assert {"firegate", "typer", "edge"} <= _loaded_by(["firegate.cli.main"])
