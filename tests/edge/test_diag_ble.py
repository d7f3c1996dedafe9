"""``firegate diag ble`` against the BLE simulator run as a real subprocess (``firegate sim
ble``), mounted on a fresh typer app as the lead mounts it in the ``diag`` group."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from firegate.cli.diag_ble import register
from simulators.ble.bluez import ENV_VAR
from tests.infra.simproc import REPO, WAIT, sim_command

KEY_HEX = "231d39c1d7cc1ab1aee224cd096db932"
WRONG_HEX = "00" * 16
DOOR, SPRINKLER, LOCKED, OTHER = (f"A4:C1:38:00:04:0{i}" for i in range(1, 5))
SCENARIO = f"""
[[ble.sensors]]
address = "{DOOR}"
kind = "door"
name = "stair-2F"
interval = 0.3
rssi = -48

[[ble.sensors]]
address = "{SPRINKLER}"
kind = "pressure"
name = "sprinkler-5F"
interval = 0.3
value = 0.42
key = "{KEY_HEX}"

[[ble.sensors]]
address = "{LOCKED}"
kind = "smoke"
interval = 0.3
key = "{KEY_HEX}"

[[ble.sensors]]
address = "{OTHER}"
kind = "temperature"
interval = 0.3
key = "{KEY_HEX}"
"""


def diag_app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, as "firegate diag"
    register(app)
    return app


@pytest.fixture(scope="module")
def sim_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``firegate sim ble`` in a subprocess; yields its D-Bus address, stops it by PID."""
    scenario = tmp_path_factory.mktemp("diag-ble") / "scenario.toml"
    scenario.write_text(SCENARIO)
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
            yield line
    finally:
        proc.send_signal(signal.SIGTERM)  # by PID: the process we started
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_json_lines_show_values_and_key_checks(sim_bus: str) -> None:
    result = CliRunner().invoke(diag_app(), [
        "ble", "--duration", "2.5", "--json",
        "--key", f"{SPRINKLER}={KEY_HEX}", "--key", f"{OTHER.lower()}={WRONG_HEX}"])
    assert result.exit_code == 0, result.output
    items = [json.loads(line) for line in result.stdout.splitlines()]
    by_address = {item["address"]: item for item in items}
    assert set(by_address) == {DOOR, SPRINKLER, LOCKED, OTHER}
    door = by_address[DOOR]
    assert (door["name"], door["rssi"], door["encrypted"], door["status"]) == (
        "stair-2F", -48, False, "ok")
    assert door["values"] == {"battery": 100.0, "door": False}
    assert door["units"] == {"battery": "%"}
    sprinkler = by_address[SPRINKLER]
    assert (sprinkler["encrypted"], sprinkler["status"]) == (True, "ok")
    assert (sprinkler["values"]["pressure"], sprinkler["units"]["pressure"]) == (0.42, "MPa")
    locked = by_address[LOCKED]
    assert (locked["encrypted"], locked["status"], locked["values"]) == (True, "no key", {})
    assert locked["problem"] == "encrypted, but no key configured"
    assert (by_address[OTHER]["status"], by_address[OTHER]["values"]) == ("wrong key", {})
    assert all(isinstance(item["packet_id"], int) for item in items if item["status"] == "ok")


def test_table_lists_every_device(sim_bus: str) -> None:
    result = CliRunner().invoke(diag_app(), ["ble", "-d", "2", "--key",
                                             f"{SPRINKLER}={KEY_HEX}"],
                                env={"COLUMNS": "160"})  # rich's width off a terminal
    assert result.exit_code == 0, result.output
    out = result.stdout
    for address in (DOOR, SPRINKLER, LOCKED, OTHER):
        assert address in out
    assert "pressure 0.42 MPa" in out
    assert "door off" in out
    assert "no key" in out
    assert "4 BTHome device(s) and 0 other advert(s) in 2 s" in out


def test_missing_adapter_exits_1_with_the_reason(sim_bus: str) -> None:
    result = CliRunner().invoke(diag_app(), ["ble", "-d", "1", "--adapter", "hci7"])
    assert result.exit_code == 1
    assert "error: cannot scan on hci7: BleakError: adapter 'hci7' not found" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--key", "A4:C1:38:00:04:01"],
     "error: --key A4:C1:38:00:04:01: the key must be 32 hexadecimal characters "
     "(the 16-byte BTHome bind key)"),
    (["--key", f"A4C138000401={KEY_HEX}"],
     "error: --key 'A4C138000401': must be a MAC address like A4:C1:38:00:00:01, "
     "got 'A4C138000401'"),
    (["--adapter", "usb0"], "error: --adapter must be an adapter name like hci0, got 'usb0'"),
])
def test_bad_options_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(diag_app(), ["ble", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_without_the_ble_extra_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bleak", None)  # as if the extra were not installed
    result = CliRunner().invoke(diag_app(), ["ble", "-d", "1"])
    assert result.exit_code == 1
    assert "error: BLE support is not installed (bleak): install firegate[ble]" in result.output


def test_the_command_has_help() -> None:
    result = CliRunner().invoke(diag_app(), ["ble", "--help"])
    assert result.exit_code == 0
    assert "--key" in result.output and "ADDRESS=HEX" in result.output

