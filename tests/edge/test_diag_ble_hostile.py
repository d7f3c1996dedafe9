"""``firegate diag ble`` hears a sensor whose advertised name carries markup and terminal control
(issue 14, part 6): the table shows it as text, ``--json`` keeps it exactly."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from firegate.cli.diag_ble import register
from simulators.ble.bluez import ENV_VAR
from tests.hostile_text import assert_shown, clean_env
from tests.infra.simproc import REPO, WAIT, sim_command

ADDRESS = "A4:C1:38:00:05:01"
NAME = "[/x]门[bold]\x1b[2J\x07"
NAME_SHOWN = "[/x]门[bold]␛[2J␇"
# TOML's own escapes: the scenario file stays plain text.
SCENARIO = f"""
[[ble.sensors]]
address = "{ADDRESS}"
kind = "door"
name = "[/x]门[bold]\\u001b[2J\\u0007"
interval = 0.3
"""


def diag_app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, as "firegate diag"
    register(app)
    return app


@pytest.fixture
def sim_bus(tmp_path: Path) -> Iterator[None]:
    """``firegate sim ble`` with the hostile sensor, stopped by PID."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    proc = subprocess.Popen([*sim_command("ble"), "--scenario", str(scenario), "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for _ in range(20):  # the export line comes within the first few lines
            line = proc.stdout.readline()
            if "export DBUS_SYSTEM_BUS_ADDRESS=" in line or not line:
                break
        assert "export DBUS_SYSTEM_BUS_ADDRESS=" in line, line
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(ENV_VAR, line.split("=", 1)[1].strip().strip("'"))
            yield
    finally:
        proc.send_signal(signal.SIGTERM)  # by PID: the process we started
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_an_advertised_name_is_shown_as_text_and_kept_in_json(sim_bus: None) -> None:
    runner = CliRunner()
    result = runner.invoke(diag_app(), ["ble", "--duration", "2", "--json"])
    assert result.exit_code == 0, result.output
    names = {json.loads(line)["name"] for line in result.stdout.splitlines()}
    assert names == {NAME}

    result = runner.invoke(diag_app(), ["ble", "-d", "2"], env=clean_env())
    assert result.exit_code == 0, result.output
    assert_shown(result.stdout, ADDRESS, NAME_SHOWN, "1 BTHome device(s)")
