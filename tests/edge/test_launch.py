"""``firegate agent run`` starts the agent without the rest of the command line (firegate.entry,
edge.launch): same exit codes and messages, and typer/rich never imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import atexit, sys
atexit.register(lambda: print("loaded:", sorted(m for m in ("typer", "rich", "click")
                                             if m in sys.modules), file=sys.stderr))
from firegate.entry import main
sys.argv = ["firegate", *sys.argv[1:]]
main()
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, *args], check=False,
                          capture_output=True,
                          text=True, timeout=60)


def test_agent_run_reports_a_bad_config_without_loading_the_cli(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.toml"
    bad.write_text('[gateway]\nid = "gw 1"\n', encoding="utf-8")
    done = _run("agent", "run", "--config", str(bad))
    assert done.returncode == 2
    assert f"{bad}: gateway.id:" in done.stderr  # the key that is wrong
    assert "loaded: []" in done.stderr


def test_agent_run_without_config_is_a_usage_error() -> None:
    done = _run("agent", "run")
    assert done.returncode == 2
    assert "--config" in done.stderr and "loaded: []" in done.stderr


def test_other_commands_and_help_still_go_to_the_cli() -> None:
    done = _run("agent", "run", "--help")
    assert done.returncode == 0 and "Run the edge agent" in done.stdout
    assert "'typer'" in done.stderr.split("loaded:")[1]  # the typer application ran


def test_python_m_edge_is_the_same_entry(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "edge", "--config", str(tmp_path / "no.toml")],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "cannot read" in done.stderr
