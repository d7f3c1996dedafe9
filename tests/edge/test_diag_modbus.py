"""``firegate diag modbus`` mounted on a fresh Typer app, against ``firegate sim modbus``.

The command runs ``asyncio.run`` itself, so each invocation happens in a worker thread while
the test's loop keeps the simulator subprocess (``tests/infra/simproc.py``) alive.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from typer.testing import CliRunner, Result

from firegate.cli.diag_modbus import register
from tests.infra.simproc import simulator

DEVICES = ("--device", "1:pressure-a=0.35", "--device", "2:pressure-b=0.5234",
           "--device", "5:level-cm=0.15", "--device", "6:elec-fire", "--noise", "0")


def diag_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def diag() -> None:
        """The diag group, as the lead's main.py builds it."""

    register(app)
    return app


async def invoke(*args: str) -> Result:
    runner, app = CliRunner(), diag_app()
    return await asyncio.to_thread(lambda: runner.invoke(app, ["modbus", *args]))


def tcp(address: str) -> tuple[str, ...]:
    host, _, port = address.rpartition(":")
    return ("--host", host, "--tcp-port", port)


async def test_profile_read_over_tcp_shows_values_status_and_raw() -> None:
    async with simulator("modbus", "--tcp", "127.0.0.1:0", *DEVICES) as (_proc, address):
        result = await invoke(*tcp(address), "--unit", "2", "--profile", "pressure-b")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "unit 2 · pressure-b" in out
    assert "│ pressure │ 523.4 │ kPa  │ 0..1600 │ yes" in out
    assert "status status: none set" in out
    assert "raw input 0=" in out  # f32, low word first, then the status word
    assert "2=0 (0x0000)" in out


async def test_json_over_rtu_pty_with_watch() -> None:
    async with simulator("modbus", "--rtu", "--no-pace", *DEVICES) as (_proc, path):
        result = await invoke("--port", path, "--unit", "6", "--profile", "elec-fire",
                              "--json", "--watch", "--reads", "3", "--interval", "0.05")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3
    first = lines[0]
    assert (first["unit"], first["profile"], first["ok"], first["errors"]) == (
        6, "elec-fire", True, [])
    assert first["endpoint"] == f"{path} 9600 8N1"
    assert first["points"]["temperature_1"] == {"value": 30.0, "unit": "°C", "min": -40.0,
                                                "max": 140.0, "in_range": True}
    assert first["points"]["residual_current"]["value"] == 20.0
    assert first["status"] == {"status": []}
    # the six fields in one merged read, raw as on the wire
    assert first["reads"] == [{"register": "holding", "start": 0, "count": 6,
                               "registers": [20, 300, 300, 300, 300, 0]}]


async def test_raw_read_signed_register() -> None:
    async with simulator("modbus", "--tcp", "127.0.0.1:0", *DEVICES) as (_proc, address):
        result = await invoke(*tcp(address), "--unit", "5", "--register", "input",
                              "--address", "16", "--count", "1", "--json")
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    # 0.15 m is 5 cm below the probe mounted at 0.20 m: i16 -5
    assert line["reads"] == [{"register": "input", "start": 16, "count": 1,
                              "registers": [0x10000 - 5]}]
    assert "points" not in line


async def test_exception_and_timeout_are_explained() -> None:
    async with simulator("modbus", "--tcp", "127.0.0.1:0", *DEVICES) as (_proc, address):
        wrong = await invoke(*tcp(address), "--unit", "2", "--profile", "pressure-a")
        silent = await invoke(*tcp(address), "--unit", "9", "--profile", "level",
                              "--timeout", "0.2", "--json")
    assert wrong.exit_code == 1
    assert "holding 0..1: exception 2 (illegal data address)" in wrong.stdout
    assert "wrong profile or address?" in wrong.stdout
    assert silent.exit_code == 1
    (line,) = [json.loads(x) for x in silent.stdout.splitlines()]
    assert line["ok"] is False
    (err,) = line["errors"]
    assert (err["error"], err["register"], err["start"], err["count"]) == (
        "timeout", "holding", 2, 1)
    assert err["detail"] == "no answer from unit 9 within 0.2 s"
    assert "baud rate and parity" in err["hint"]


async def test_custom_profile_from_a_gateway_config(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("""
[modbus_profiles.board-leak]
[[modbus_profiles.board-leak.point]]
name = "leak"
quantity = "residual_current"
address = 0
min = 0
max = 10
""", "utf-8")
    async with simulator("modbus", "--tcp", "127.0.0.1:0", *DEVICES) as (_proc, address):
        result = await invoke(*tcp(address), "--unit", "6", "--profile", "board-leak",
                              "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    # 20 mA against a custom range of 0..10: read, and flagged implausible
    assert line["points"]["leak"] == {"value": 20.0, "unit": "mA", "min": 0.0, "max": 10.0,
                                      "in_range": False}


async def test_port_that_cannot_be_opened(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB9"
    result = await invoke("--port", str(missing), "--unit", "1", "--profile", "level")
    assert result.exit_code == 2
    assert result.stderr == f"error: cannot open {missing}: no such device\n"
    plain = tmp_path / "plain"
    plain.write_text("", "utf-8")
    result = await invoke("--port", str(plain), "--unit", "1", "--profile", "level", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "ok": False, "error": "open",
        "detail": f"cannot open {plain}: busy (another program has it) or not a serial port"}


async def test_option_errors() -> None:
    cases = [
        (("--unit", "1", "--profile", "level"),
         "error: give --port DEVICE (Modbus RTU) or --host HOST (Modbus TCP)\n"),
        (("--host", "h", "--unit", "1"),
         "error: give --profile KEY, or --register holding|input|coil|discrete_input with "
         "--address/--count\n"),
        (("--host", "h", "--unit", "1", "--profile", "levl"),
         "error: --profile: unknown profile 'levl'; known: di-16, di-8, elec-fire, fire-pump, "
         "level, level-cm, pressure-a, pressure-b, pressure-c, valve-4\n"),
        (("--host", "h", "--unit", "1", "--register", "coils"),
         "error: --register: must be holding, input, coil, discrete_input, got 'coils'\n"),
        (("--host", "h", "--port", "/dev/x", "--unit", "1", "--profile", "level"),
         "error: give --port DEVICE (Modbus RTU) or --host HOST (Modbus TCP)\n"),
        (("--port", "/dev/x", "--parity", "X", "--unit", "1", "--profile", "level"),
         "error: --parity: must be N, E or O, got 'X'\n"),
    ]
    for args, message in cases:
        result = await invoke(*args)
        assert (result.exit_code, result.stderr) == (2, message), args
    result = await invoke("--host", "h", "--unit", "0", "--profile", "level")
    assert result.exit_code == 2  # typer's own range check
