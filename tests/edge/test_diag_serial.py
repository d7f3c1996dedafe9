"""``firegate diag serial``: mounted on a fresh typer app, run against the real panel simulator
(a subprocess on a pty it creates, or listening on TCP), whose ledger says what was confirmed."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from firegate.cli.diag_serial import register
from tests.infra.simproc import REPO, WAIT, sim_command

app = typer.Typer()


@app.callback()
def diag() -> None:
    """Stand-in for the lead's ``firegate diag`` group."""


register(app)


@contextlib.contextmanager
def simulator(tmp: Path, *args: str) -> Iterator[str]:
    """``firegate sim panel`` with a ledger; yields its address; stopped by PID."""
    proc = subprocess.Popen([*sim_command("panel"), "--ledger", str(tmp / "ledger.jsonl"),
                             "--quiet", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening "), line
        yield line.split()[2]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def ledger(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in
            (tmp / "ledger.jsonl").read_text(encoding="utf-8").splitlines()]


def lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines()]


def test_confirm_answers_uploads_as_a_centre_for_a_person_to_read(tmp_path: Path) -> None:
    with simulator(tmp_path, "--fire-alarm-at", "1.0", "--silence-at", "1.3",
                   "--confirm-timeout", "1") as path:
        result = CliRunner().invoke(app, ["serial", path, "--confirm", "--duration", "3.5"])
        assert result.exit_code == 0, result.output
    text = result.output
    assert f"serial {path} 9600 8N1, profile standard, answering as a centre" in text
    assert "type 2 component_state" in text and "点型光电感烟火灾探测器 0x00000bb9" in text
    assert '"3F 东侧走廊" normal+fire_alarm' in text
    assert "type 4 facility_operation" in text and "silence" in text
    assert "-> confirm (command 3) serial" in text and "sent_confirm 2" in text
    assert [r["action"] for r in ledger(tmp_path) if r["event"] == "confirmed"] == [
        "fire_alarm", "silence"]


DIAG = ("import typer\n"
        "from firegate.cli.diag_serial import register\n"
        "app = typer.Typer()\n"
        "app.callback()(lambda: None)\n"
        "register(app)\n"
        "app()\n")


def test_listening_only_json_shows_garbage_with_its_offset_and_answers_nothing(
        tmp_path: Path) -> None:
    # A socat pair like a cable: the tool opens its end first (a subprocess whose first JSON
    # line says it is listening), then the simulator opens the other and starts its timeline.
    ends = tmp_path / "centre", tmp_path / "panel"
    socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={ends[0]}",
                              f"pty,raw,echo=0,link={ends[1]}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        "[panel]\nconfirm_timeout = 1.0\n"
        "[[panel.events]]\nat = 0.3\naction = \"garbage\"\nbytes = 20\n"
        "[[panel.events]]\nat = 0.3\naction = \"fire_alarm\"\ncomponent = \"smoke-3F-east\"\n",
        encoding="utf-8")
    try:
        deadline = time.monotonic() + WAIT
        while not (ends[0].exists() and ends[1].exists()):
            assert time.monotonic() < deadline, "socat made no ptys"
            time.sleep(0.02)
        # Three frames: the fire alarm and two resends (the condition to stop on, not a time).
        tool = subprocess.Popen([sys.executable, "-c", DIAG, "serial", str(ends[0]), "--json",
                                 "--frames", "3", "--duration", str(WAIT)], cwd=REPO,
                                stdout=subprocess.PIPE, text=True)
        assert tool.stdout is not None
        head = json.loads(tool.stdout.readline())
        assert head["confirm"] is False and head["link"] == f"serial {ends[0]} 9600 8N1"
        with simulator(tmp_path, "--port", str(ends[1]), "--scenario", str(scenario)):
            rest, _ = tool.communicate(timeout=WAIT)
        assert tool.returncode == 0
    finally:
        socat.terminate()  # by PID
        socat.wait()
    out = lines(rest)
    garbage, frame, *resent = (o for o in out if "error" in o or "frame" in o)
    assert len(resent) == 2, out
    assert garbage["error"]["kind"] == "garbage" and garbage["offset"] == 0
    assert len(bytes.fromhex(garbage["error"]["data"])) == 20
    assert frame["offset"] == 20 and frame["adu"]["objects"][0]["description"] == "3F 东侧走廊"
    # Unconfirmed, the UITD sends the same frame again (§6.5.4), right after the first.
    assert resent and all(r["frame"]["serial"] == frame["frame"]["serial"] for r in resent)
    assert resent[0]["offset"] == 20 + 30 + frame["frame"]["adu_length"]
    assert not any("sent" in o for o in out)
    assert out[-1]["summary"]["error_garbage"] == 1
    assert not any(r["event"] == "confirmed" for r in ledger(tmp_path))


def test_tcp_to_a_listening_uitd_denies_a_damaged_frame(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        "[panel]\nconfirm_timeout = 1.0\n"
        "[[panel.events]]\nat = 0.5\naction = \"bad_checksum\"\n"
        "[[panel.events]]\nat = 0.5\naction = \"fault\"\ncomponent = \"module-pump-room\"\n",
        encoding="utf-8")
    with simulator(tmp_path, "--tcp-listen", "127.0.0.1:0", "--scenario", str(scenario)) as a:
        # The UITD queues its uploads until a centre connects: nothing can be missed here.
        result = CliRunner().invoke(app, ["serial", "--tcp", a, "--confirm", "--json",
                                          "--duration", "2.5"])
        assert result.exit_code == 0, result.output
    out = lines(result.output)
    assert out[0]["link"] == f"tcp {a}"
    (damaged,) = [o for o in out if "error" in o]
    assert damaged["error"]["kind"] == "bad_checksum"
    assert any(o.get("sent") == "deny" and o["offset"] == damaged["offset"] for o in out)
    assert out[-1]["summary"]["error_bad_checksum"] == 1
    log = ledger(tmp_path)
    assert any(r["event"] == "resent" and r.get("why") == "denied" for r in log)
    assert [r["action"] for r in log if r["event"] == "confirmed"] == ["fault"]


def test_bad_arguments_and_a_missing_port_fail_clearly(tmp_path: Path) -> None:
    runner = CliRunner()
    both = runner.invoke(app, ["serial", "/dev/null", "--tcp", "127.0.0.1:1"])
    assert both.exit_code == 2 and "give a serial PORT or --tcp HOST:PORT" in both.output
    profile = runner.invoke(app, ["serial", "/dev/null", "--profile", "acme"])
    assert profile.exit_code == 2 and "unknown GB/T 26875.3 profile 'acme'" in profile.output
    tcp = runner.invoke(app, ["serial", "--tcp", "localhost"])
    assert tcp.exit_code == 2 and "expected HOST:PORT" in tcp.output
    missing = runner.invoke(app, ["serial", str(tmp_path / "ttyUSB9"), "--duration", "1"])
    assert missing.exit_code == 2
    assert f"cannot open serial {tmp_path / 'ttyUSB9'} 9600 8N1" in missing.output
