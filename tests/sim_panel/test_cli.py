"""``firegate sim panel`` run for real as a subprocess, and talked to as the agent will.

The subprocess is the installed console command, ``firegate sim panel ...``
(``tests/infra/simproc.py``); every process started here is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path

from typer.testing import CliRunner

from firegate.cli.sim import build
from protocols.gb26875 import ComponentStatus, Reserved, UitdState, UitdStatus
from tests.infra.simproc import WAIT, sim_command
from tests.infra.simproc import simulator as _simulator

from .helpers import decoded, pty_centre, tcp_centre

SIM = sim_command("panel")


def simulator(*args: str) -> contextlib.AbstractAsyncContextManager[
        tuple[asyncio.subprocess.Process, str]]:
    """Start the simulator, yield it with the address from its first line, stop it."""
    return _simulator("panel", *args, first_line=("listening ", "dialing "))


async def rest_of_output(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    proc.send_signal(signal.SIGTERM)
    out = await asyncio.wait_for(proc.stdout.read(), WAIT)
    assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    return out.decode()


async def test_pty_subprocess_delivers_a_fire_alarm_and_answers(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    async with simulator("--fire-alarm-at", "1.0", "--confirm-timeout", "2",
                         "--ledger", str(ledger)) as (proc, path):
        assert path.startswith("/dev/")
        async with pty_centre(path) as centre:
            (obj,) = decoded(await centre.upload(timeout=WAIT)).objects
            assert isinstance(obj, ComponentStatus) and obj.description == "3F 东侧走廊"
            (state,) = (await centre.read(81, Reserved())).objects
            assert isinstance(state, UitdStatus) and state.state & UitdState.FIRE_ALARM
            out = await rest_of_output(proc)
    assert "event t=1 fire_alarm smoke-3F-east" in out
    assert "stopped: 1 uploads, 1 confirmed, 0 failed, 0 pending" in out
    records = [json.loads(line) for line in ledger.read_text(encoding="utf-8").splitlines()]
    confirmed = [r for r in records if r["event"] == "confirmed"]
    assert len(confirmed) == 1 and "3F 东侧走廊" in confirmed[0]["summary"]
    assert any(r["event"] == "answered" and r["response_type"] == 21 for r in records)


async def test_existing_serial_port_through_a_socat_pair(tmp_path: Path) -> None:
    # socat joins two ptys like a null-modem cable: the simulator opens one end with --port
    # (pyserial), the centre the other.
    uitd_end, centre_end = tmp_path / "uitd", tmp_path / "centre"
    socat = await asyncio.create_subprocess_exec(
        "socat", f"pty,raw,echo=0,link={uitd_end}", f"pty,raw,echo=0,link={centre_end}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(WAIT):
            while not (uitd_end.exists() and centre_end.exists()):
                await asyncio.sleep(0.02)
        async with pty_centre(str(centre_end)) as centre, simulator(
                "--port", str(uitd_end), "--fault-at", "0.5:module-pump-room",
                "--confirm-timeout", "2") as (proc, address):
            assert address == str(uitd_end)
            (obj,) = decoded(await centre.upload(timeout=WAIT)).objects
            assert isinstance(obj, ComponentStatus) and obj.component_type == 87
            # Our confirm went out before this read on the same line: once the answer is
            # back, the simulator has the confirm too.
            (state,) = (await centre.read(81, Reserved())).objects
            assert isinstance(state, UitdStatus) and not state.state & UitdState.FIRE_ALARM
            out = await rest_of_output(proc)
            assert "stopped: 1 uploads, 1 confirmed" in out
    finally:
        socat.send_signal(signal.SIGTERM)  # by PID
        await asyncio.wait_for(socat.wait(), WAIT)


async def test_tcp_listen_subprocess() -> None:
    async with simulator("--tcp-listen", "127.0.0.1:0", "--fire-alarm-at", "0.5",
                         "--speed", "2") as (proc, address), tcp_centre(address) as centre:
        assert decoded(await centre.upload(timeout=WAIT)).type_mark == 2
        await centre.read(81, Reserved())  # orders our confirm before the stop
        assert "stopped: 1 uploads, 1 confirmed" in await rest_of_output(proc)


runner = CliRunner()


def test_list_actions() -> None:
    result = runner.invoke(build(), ["panel", "--list-actions"])
    assert result.exit_code == 0
    assert "fire_alarm" in result.output and "link_loss" in result.output


def test_bad_scenario_and_flags_exit_2_with_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[panel]\n[[panel.events]]\nat = 1\naction = "fire"\n', encoding="utf-8")
    result = runner.invoke(build(), ["panel", "--scenario", str(bad)])
    assert result.exit_code == 2
    assert "panel.events[0].action: must be one of 'fire_alarm'," in result.output
    result = runner.invoke(build(), ["panel", "--confirm-timeout", "30"])
    assert result.exit_code == 2
    assert "--confirm-timeout: must be at most 10, got 30" in result.output
    result = runner.invoke(build(), ["panel", "--fire-alarm-at", "5:nowhere"])
    assert result.exit_code == 2 and "--fire-alarm-at: no component 'nowhere'" in result.output
    result = runner.invoke(build(), ["panel", "--pty", "--tcp-listen", "127.0.0.1:0"])
    assert result.exit_code == 2 and "choose one of" in result.output
    result = runner.invoke(build(), ["panel", "--port", str(tmp_path / "no-such-port")])
    assert result.exit_code == 2 and "cannot open serial" in result.output
    result = runner.invoke(build(), ["panel", "--ledger", str(tmp_path / "no" / "dir.jsonl")])
    assert result.exit_code == 2 and "--ledger: " in result.output
    precious = tmp_path / "precious"
    precious.write_text("keep me", encoding="utf-8")
    result = runner.invoke(build(), ["panel", "--link", str(precious), "--duration", "0"])
    assert result.exit_code == 2 and "cannot open pty" in result.output
    assert precious.read_text(encoding="utf-8") == "keep me"
