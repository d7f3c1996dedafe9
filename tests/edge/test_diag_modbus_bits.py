"""``firegate diag modbus`` on coils, discrete inputs and register bits, against a real
pymodbus server (``modbus_bits_rig.ContactServer``) serving from the test's loop while the
command runs ``asyncio.run`` in a worker thread."""

from __future__ import annotations

import json
from pathlib import Path

from .modbus_bits_rig import ContactServer
from .test_diag_modbus import invoke, tcp


async def test_di_module_shows_assigned_channels_with_meaning_and_the_rest_raw() -> None:
    server = ContactServer((4,))
    di = server.devices[4].inputs
    di[1] = True  # DI2: the pump runs
    di[5] = True  # DI6: unassigned, but a technician sees it
    async with server.serving():
        result = await invoke(*tcp(server.address), "--unit", "4", "--profile", "di-8",
                              "--channel", "1=valve:3F riser", "--channel", "2=run:pump 1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "3F riser" in out and "closed" in out and "valve_off_normal" in out
    assert "pump 1" in out and "running" in out
    assert "channels (no meaning assigned; --channel N=MEANING): 3=0  4=0  5=0  6=1  7=0  8=0" \
        in out
    assert "raw discrete_input 0..7: 01000100" in out
    assert server.devices[4].requests == {2: 1}  # one FC2 read covers the bank


async def test_json_contacts_of_the_pump_controller() -> None:
    server = ContactServer((9,))
    server.devices[9].holding[:3] = [650, 12, 0b010]  # fault, and auto bit clear: manual
    async with server.serving():
        result = await invoke(*tcp(server.address), "--unit", "9", "--profile", "fire-pump",
                              "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["points"]["outlet_pressure"]["value"] == 650.0
    assert doc["contacts"]["run"] == {
        "meaning": "run", "channel": 1, "state": "stopped", "normal": "stopped", "raw": 0,
        "event": "running", "abnormal": False, "description": "run"}
    assert doc["contacts"]["fault"]["abnormal"] is True
    assert doc["contacts"]["manual"] | {} == {
        "meaning": "manual", "channel": 3, "state": "manual", "normal": "auto", "raw": 0,
        "event": "manual_mode", "abnormal": True, "description": "auto/manual"}
    assert doc["reads"] == [{"register": "holding", "start": 0, "count": 3,
                             "registers": [650, 12, 2]}]


async def test_raw_coil_read_and_the_errors_of_bit_options() -> None:
    server = ContactServer((2,))
    server.devices[2].coils[3] = True
    async with server.serving():
        raw = await invoke(*tcp(server.address), "--unit", "2", "--register", "coil",
                           "--address", "0", "--count", "10", "--json")
        bad_channel = await invoke(*tcp(server.address), "--unit", "4", "--profile", "di-8",
                                   "--channel", "9=valve")
        bad_meaning = await invoke(*tcp(server.address), "--unit", "4", "--profile", "di-8",
                                   "--channel", "1=valv")
        too_many = await invoke(*tcp(server.address), "--unit", "2", "--register", "holding",
                                "--count", "126")
    assert raw.exit_code == 0, raw.output
    assert json.loads(raw.stdout)["reads"] == [
        {"register": "coil", "start": 0, "count": 10, "bits": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]}]
    assert server.devices[2].requests == {1: 1}
    assert (bad_channel.exit_code, bad_channel.stderr) == (
        2, "error: --channel: di-8 has no channel 9; channels: 1..8\n")
    assert (bad_meaning.exit_code, bad_meaning.stderr) == (
        2, "error: --channel 1: unknown meaning 'valv'; meanings: valve, run, fault, manual, "
           "door, supervisory\n")
    assert (too_many.exit_code, too_many.stderr) == (
        2, "error: --count: at most 125 registers per read (Modbus V1.1b3 §6.3), got 126\n")


async def test_a_hostile_description_is_shown_escaped_and_kept_exact_in_json() -> None:
    server = ContactServer((4,))
    hostile = "3F\x1b[2J riser [bold]x[/bold]\x07"
    async with server.serving():
        table = await invoke(*tcp(server.address), "--unit", "4", "--profile", "di-8",
                             "--channel", f"1=valve:{hostile}")
        doc = await invoke(*tcp(server.address), "--unit", "4", "--profile", "di-8",
                           "--channel", f"1=valve:{hostile}", "--json")
    assert table.exit_code == 0 == doc.exit_code, table.output
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout
    assert "3F␛[2J riser" in table.stdout and "[bold]x[/bold" in table.stdout  # as text
    assert json.loads(doc.stdout)["contacts"]["ch1"]["description"] == hostile


async def test_the_gateway_config_supplies_the_map_and_the_channels(tmp_path: Path) -> None:
    """``--config`` with the gateway's own file: the device at --unit on this host is read as
    the agent reads it, channels and descriptions included, without --profile."""
    server = ContactServer((7,))
    server.devices[7].inputs[2] = True  # DI3: the fan runs
    async with server.serving():
        host, _, port = server.address.rpartition(":")
        gateway = tmp_path / "gateway.toml"
        gateway.write_text(f"""
[[modbus]]
name = "bus1"
host = "{host}"
tcp_port = {port}
[[modbus.device]]
unit = 7
name = "B1 fans"
profile = "di-8"
channels.1 = "valve:B1 riser supply valve"
channels.3 = "run:smoke fan 2"
""", encoding="utf-8")
        found = await invoke(*tcp(server.address), "--unit", "7", "--config", str(gateway),
                             "--json")
        absent = await invoke(*tcp(server.address), "--unit", "8", "--config", str(gateway))
    assert found.exit_code == 0, found.output
    contacts = json.loads(found.stdout)["contacts"]
    assert {n: (c["description"], c["state"], c["abnormal"]) for n, c in contacts.items()} == {
        "ch1": ("B1 riser supply valve", "closed", True),
        "ch3": ("smoke fan 2", "running", True)}
    assert (absent.exit_code, absent.stderr) == (
        2, f"error: give --profile KEY, or --register holding|input|coil|discrete_input with "
           f"--address/--count ({gateway} has no device 8 on this bus)\n")
