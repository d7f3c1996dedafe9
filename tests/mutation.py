"""Mutation testing of the promise modules, one group at a time: ``./dev mutate [group ...]``.

The groups (files to mutate, tests that judge them) are rows of ``[tool.firegate.mutate]`` in
pyproject.toml; mutmut's own settings are in ``[tool.mutmut]``. mutmut 3 keeps one state per
working directory (``./mutants``) and throws all results away when its test selection changes,
so each group runs in its own directory ``mutants/<group>/``, which holds symlinks to the
packages, the tests and pyproject.toml, and mutmut's copy of them in ``mutants/<group>/mutants``.
Each group runs in a fresh interpreter: mutmut puts the mutated tree first on ``sys.path`` and
the modules it imports stay imported.

    python tests/mutation.py run [group ...]     run the groups (all when none is named); a
                                                 mutant keeps its verdict until its function
                                                 changes
    python tests/mutation.py again [group ...]   test the survivors (and timeouts, mutants
                                                 without tests) again, after new tests
    python tests/mutation.py results [group ...] list the survivors and the summary per group
    python tests/mutation.py list                the groups and their files

See docs/testing.md for how to read the results and what was last found.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "mutants"
# What mutmut must find in a group's directory: its source_paths, the tests, also_copy, config.
LINKED = ("protocols", "edge", "collector", "tests", "docs", "pyproject.toml")


def groups() -> dict[str, dict[str, Any]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    table: dict[str, dict[str, Any]] = data["tool"]["firegate"]["mutate"]
    return table


def prepare(name: str) -> Path:
    work = STATE / name
    work.mkdir(parents=True, exist_ok=True)
    for entry in LINKED:
        link = work / entry
        if not link.is_symlink():
            link.symlink_to(Path("..") / ".." / entry)
    return work


def configure(spec: dict[str, Any]) -> None:
    """Set the group's mutated files and test selection on mutmut's loaded configuration;
    ``timeout`` (seconds, per test) replaces pytest-timeout's: a mutant that makes an async
    test wait for an event that never comes costs that long (mutmut's own limit counts CPU
    seconds, and a waiting test uses none). ``shrink = false``: hypothesis does not shrink a
    failing example (minutes per mutant in the property tests)."""
    from mutmut.configuration import config

    missing = [t for t in spec["tests"] if not Path(t).exists()]
    if missing:
        raise SystemExit(f"mutate: test paths not found: {missing}")
    cfg = config()
    cfg.only_mutate = list(spec["mutate"])
    cfg.pytest_add_cli_args_test_selection = list(spec["tests"])
    if "timeout" in spec:
        args = [a for a in cfg.pytest_add_cli_args if not a.startswith("--timeout=")]
        cfg.pytest_add_cli_args = [*args, f"--timeout={int(spec['timeout'])}"]
    cfg.debug = bool(os.environ.get("FIREGATE_MUTATE_DEBUG"))  # mutmut prints pytest's output
    if spec.get("shrink", True) is False:  # property tests: no shrinking (tests/conftest.py)
        cfg.pytest_add_cli_args = [*cfg.pytest_add_cli_args, "--hypothesis-profile=mutation"]


def one(command: str, name: str) -> int:
    """Run one mutmut command for one group, in this (fresh) interpreter."""
    spec = groups()[name]
    os.chdir(prepare(name))
    # This file's folder (tests/) must not shadow the mutated copy that mutmut puts first.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
    configure(spec)
    from mutmut.__main__ import cli

    args = ["run" if command == "again" else command]
    if args[0] == "run":
        args += ["--max-children", os.environ.get("FIREGATE_MUTATE_CHILDREN", "1")]
    if command == "run" and "only" in spec:  # part of a file: mutant name globs
        args += list(spec["only"])
    if command == "again":  # mutmut re-tests a decided mutant only when it is named
        retry = [key for key, status in verdicts(name).items()
                 if status in ("survived", "timeout", "no tests", "suspicious")
                 and in_scope(spec, key)]
        if not retry:
            print(f"{name}: nothing to test again")
            return 0
        args += retry
    try:
        cli.main(args, prog_name="mutmut", standalone_mode=False)
    except SystemExit as exc:  # mutmut exits on a failed clean run or missing stats
        return int(exc.code or 0)
    summary(name)
    return 0


def in_scope(spec: dict[str, Any], key: str) -> bool:
    """Whether mutant ``key`` is in the group's ``only`` globs (all are, without any)."""
    return "only" not in spec or any(fnmatch.fnmatch(key, g) for g in spec["only"])


def verdicts(name: str) -> dict[str, str]:
    """Mutant name -> status, from mutmut's meta files (``mutants/<group>/mutants``)."""
    from mutmut.stats import status_by_exit_code

    out: dict[str, str] = {}
    for path in groups()[name]["mutate"]:
        meta = STATE / name / "mutants" / (path + ".meta")
        if meta.exists():
            data = json.loads(meta.read_text("utf-8"))
            for key, code in data.get("exit_code_by_key", {}).items():
                out[key] = "not checked" if code is None else status_by_exit_code[code]
    return out


def summary(name: str) -> dict[str, Any]:
    """Print (and return) a group's counts per status and its surviving mutants."""
    spec = groups()[name]
    found = {k: s for k, s in verdicts(name).items() if in_scope(spec, k)}
    counts: dict[str, int] = {}
    for status in found.values():
        counts[status] = counts.get(status, 0) + 1
    survivors = sorted(k for k, s in found.items() if s == "survived")
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"{name}: {text or 'not yet run'}")
    for key in survivors:
        print(f"    survived: {key}")
    return {"counts": counts, "survivors": survivors}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "again", "results", "list", "--one"}:
        print(__doc__)
        return 2
    table = groups()
    if argv[0] == "--one":
        return one(argv[1], argv[2])
    if argv[0] == "list":
        for name, spec in table.items():
            print(f"{name:10} {' '.join(spec['mutate'])}\n{'':10} tests: {' '.join(spec['tests'])}")
        return 0
    names = argv[1:] or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        print(f"unknown group(s) {unknown}; known: {', '.join(table)}", file=sys.stderr)
        return 2
    worst = 0
    for name in names:
        if argv[0] == "results":
            summary(name)
            continue
        print(f"==> mutate {name}: {' '.join(table[name]['mutate'])}", flush=True)
        worst = max(worst, subprocess.call([sys.executable, __file__, "--one", argv[0], name]))
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
