"""``firegate sim ble``: flags, error messages, and a clean stop on Ctrl-C / SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from firegate.cli.sim_ble import register
from tests.infra.simproc import sim_command
from tests.sim_ble.helpers import pid_alive

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = Path(__file__).resolve().parents[2] / "simulators" / "ble" / "example.toml"


def sim_app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return app


def pids_in(output: str) -> list[int]:
    match = re.search(r"pids (\d+) (\d+)", output)
    assert match, output
    return [int(match[1]), int(match[2])]


def test_registered_in_the_sim_group() -> None:
    from firegate.cli import sim as cli

    assert "firegate.cli.sim_ble" in cli._REGISTRY


def test_runs_a_scenario_and_flag_sensors_then_stops_the_bus() -> None:
    result = CliRunner().invoke(sim_app(), [
        "ble", "--scenario", str(EXAMPLE), "--sensor", "smoke:A4:C1:38:00:00:99",
        "--speed", "100", "--duration", "12",
    ])
    assert result.exit_code == 0, result.output
    assert "export DBUS_SYSTEM_BUS_ADDRESS='unix:path=" in result.output
    assert ("sensor A4:C1:38:00:00:05 pressure    sprinkler-5F every 5 s (encrypted)"
            in result.output)
    assert "sensor A4:C1:38:00:00:99 smoke       smoke-0099 every 5 s" in result.output
    assert "stair-2F: open, battery 100 %" in result.output  # the event at t=10
    assert re.search(r"stopped after \d+ advertisements", result.output)
    assert not any(pid_alive(p) for p in pids_in(result.output))


@pytest.mark.parametrize(("args", "message"), [
    ([], "give --scenario FILE and/or --sensor KIND:ADDRESS"),
    (["--sensor", "dor:A4:C1:38:00:00:01"],
     "error: --sensor 'dor:A4:C1:38:00:00:01': kind: must be one of 'callpoint', 'door', "
     "'pressure', 'smoke', 'temperature', got 'dor'"),
    (["--sensor", "door:A4:C1:38:00:00:01", "--sensor", "smoke:a4:c1:38:00:00:01"],
     "--sensor A4:C1:38:00:00:01: declared twice"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(sim_app(), ["ble", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_bad_scenario_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "s.toml"
    bad.write_text('[[ble.sensors]]\naddress = "A4:C1:38:00:00:01"\nkind = "siren"\n')
    result = CliRunner().invoke(sim_app(), ["ble", "--scenario", str(bad)])
    assert result.exit_code == 2
    assert "ble.sensors[0].kind: must be one of 'callpoint', " in result.output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_runs_until_interrupted_and_stops_the_bus(signum: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    # A suite started in the background of a shell without job control has SIGINT ignored,
    # and an ignored signal stays ignored across exec: the simulator would not see Ctrl-C at
    # all. A handler (not "ignore") in this process becomes the default in the child.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [*sim_command("ble"), "--sensor", "door:A4:C1:38:00:00:01", "--interval", "0.5"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:  # until the first advert shows the bus works
            lines.append(line)
            if line.startswith("t="):
                break
        pids = pids_in("".join(lines))
        assert all(pid_alive(p) for p in pids)
        proc.send_signal(signum)
        try:  # generous: stopping the bus is up to 5 s per process on a busy machine
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
            raise AssertionError("still running 60 s after the signal; its output:\n"
                                 + "".join(lines) + rest) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopped after" in rest
    assert not any(pid_alive(p) for p in pids)
