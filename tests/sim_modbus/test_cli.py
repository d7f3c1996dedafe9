"""``firegate sim modbus`` run for real as a subprocess, and read with a real client.

The subprocess is the installed console command, ``firegate sim modbus ...``
(``tests/infra/simproc.py``); every process started here is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from firegate.cli.sim import build
from protocols.registers import get_profile
from tests.infra.simproc import REPO, WAIT, sim_command
from tests.infra.simproc import simulator as _simulator

from .helpers import read_value, rtu_client, tcp_client

SIM = sim_command("modbus")


def simulator(*args: str) -> contextlib.AbstractAsyncContextManager[
        tuple[asyncio.subprocess.Process, str]]:
    """Start the simulator, yield it with the address from its first line, stop it."""
    return _simulator("modbus", *args)


async def wait_for_value(read: Callable[[], Awaitable[float]],
                         predicate: Callable[[float], bool]) -> float:
    """Poll until ``predicate(value)``; the scenario runs on the wall clock here."""
    async with asyncio.timeout(WAIT):
        while True:
            value = await read()
            if predicate(value):
                return value
            await asyncio.sleep(0.05)


async def test_rtu_subprocess_runs_a_scenario(tmp_path: Path) -> None:
    scenario = tmp_path / "site.toml"
    scenario.write_text("""
[panel]
ignored = true

[modbus]
noise = 0.0

[[modbus.devices]]
id = 1
profile = "pressure-b"
name = "hydrant-3F"
initial = 0.35

[[modbus.events]]
at = 2.0
device = 1
action = "hydrant_open"
""", "utf-8")
    link = tmp_path / "rs485"
    args = ("--rtu", "--no-pace", "--link", str(link), "--scenario", str(scenario),
            "--device", "7:level=2.5", "--speed", "20")
    async with simulator(*args) as (proc, path):
        assert link.resolve() == Path(path).resolve()
        profile = get_profile("pressure-b")
        async with rtu_client(str(link)) as client:
            assert await read_value(client, 7, get_profile("level")) == pytest.approx(2.5)

            async def pressure() -> float:
                return await read_value(client, 1, profile)

            assert await wait_for_value(pressure, lambda kpa: kpa < 150.0) < 150.0
    assert proc.returncode == 0
    assert proc.stdout is not None
    rest = (await proc.stdout.read()).decode()
    assert "event t=2 device 1: hydrant_open (hydrant-3F)" in rest
    assert "stopped:" in rest
    assert not link.exists()  # the symlink goes with the simulator


async def test_tcp_subprocess_with_device_flags() -> None:
    async with simulator("--tcp", "127.0.0.1:0", "--device", "3:elec-fire", "--device",
                         "4:pressure-c=0.8", "--noise", "0") as (_, address), \
            tcp_client(address) as client:
        assert await read_value(client, 4, get_profile("pressure-c")) == pytest.approx(800.0)
        assert await read_value(client, 3, get_profile("elec-fire"),
                                "temperature_2") == pytest.approx(30.0)


async def test_bad_scenario_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[modbus.devices]]\nid = 1\nprofile = "pressure-x"\n', "utf-8")
    proc = await asyncio.create_subprocess_exec(
        *SIM, "--scenario", str(bad), cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode == 2
    assert "modbus.devices[0].profile: must be one of 'di-16', 'di-8', 'elec-fire'," in err.decode()


def test_list_profiles_and_option_errors() -> None:
    runner = CliRunner()
    app = build()
    result = runner.invoke(app, ["modbus", "--list-profiles"])
    assert result.exit_code == 0
    assert "pressure-b: Sprinkler pressure transmitter" in result.output
    assert "f32 little" in result.output
    result = runner.invoke(app, ["modbus", "--rtu", "--tcp", "127.0.0.1:0"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["modbus", "--tcp", "nohost"])
    assert result.exit_code == 2


async def test_paced_rtu_line_still_answers() -> None:
    """At 9600 baud each read takes tens of ms, like a real line; it must still work."""
    from simulators.modbus.model import ManualClock
    from simulators.modbus.scenario import Scenario, parse_device_option
    from simulators.modbus.server import serve_rtu_pty

    bus = Scenario((parse_device_option("1:level=1.25"),), noise=0.0).build(ManualClock())
    async with serve_rtu_pty(bus, 9600, pace=True) as running, \
            rtu_client(running.address) as client:
        assert await read_value(client, 1, get_profile("level")) == pytest.approx(1.25)
        assert running.link is not None and running.link.bytes_relayed > 0
