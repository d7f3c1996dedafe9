"""The outbox's modules import one another without a cycle.

``Outbox`` (``outbox.py``) is the public face; the committer (``commit.py``) and the disk
recovery (``space.py``) work on its ``Core`` and never import ``outbox.py`` back. Checked
statically over every import inside the package, ``if TYPE_CHECKING:`` ones and lazy ones
included, and by loading each of them in a fresh interpreter without the package's
``__init__`` (which imports everything).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import edge.outbox

PACKAGE = Path(edge.outbox.__file__).resolve().parent
ROOT = PACKAGE.parent.parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def package_imports(path: Path) -> set[str]:
    """Modules of ``edge.outbox`` that a file imports, wherever the import sits."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import x
                names |= {node.module} if node.module else {a.name for a in node.names}
            elif node.level == 0 and node.module and node.module.startswith("edge.outbox."):
                names.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[2] for a in node.names
                      if a.name.startswith("edge.outbox.")}
    return {n.split(".")[0] for n in names} & set(MODULES)


def graph() -> dict[str, set[str]]:
    return {m: package_imports(PACKAGE / f"{m}.py") for m in MODULES}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        for nxt in sorted(edges.get(node, ())):
            if cycle := visit(nxt, [*path, node]):
                return cycle
        done.add(node)
        return None

    for start in sorted(edges):
        if cycle := visit(start, []):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    edges = graph()
    assert {"outbox", "commit", "space", "core"} <= edges.keys()
    assert find_cycle(edges) is None


def test_only_the_public_face_imports_outbox_py() -> None:
    assert sorted(m for m, deps in graph().items() if "outbox" in deps) == []
    assert "outbox" in package_imports(PACKAGE / "__init__.py")


def test_the_static_check_sees_a_type_checking_cycle(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nfrom . import space\n"
                     "if TYPE_CHECKING:\n    from .outbox import Outbox\n")
    assert package_imports(probe) == {"space", "outbox"}
    assert find_cycle({"commit": {"space"}, "space": {"outbox"}, "outbox": {"commit"}}) == [
        "commit", "space", "outbox", "commit"]


# The package's __init__ imports outbox.py, so a plain ``import edge.outbox.commit`` would
# load everything anyway; an empty stand-in for the package shows what the module needs.
_ALONE = """
import importlib.util, sys, types
import edge
spec = importlib.util.find_spec("edge.outbox")
stand_in = types.ModuleType("edge.outbox")
stand_in.__path__ = list(spec.submodule_search_locations)
sys.modules["edge.outbox"] = stand_in
import edge.outbox.{module}
print(" ".join(sorted(m for m in sys.modules if m.startswith("edge.outbox."))))
"""


@pytest.mark.parametrize("module", ["commit", "space", "core"])
def test_a_module_loads_without_outbox_py(module: str) -> None:
    out = subprocess.run([sys.executable, "-c", _ALONE.format(module=module)], cwd=ROOT,
                         capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT)}, timeout=120)
    loaded = set(out.stdout.split())
    assert f"edge.outbox.{module}" in loaded
    assert "edge.outbox.outbox" not in loaded
