"""``firegate diag ble``: listen for BTHome sensors and show what each one sends.

A technician's tool for commissioning wireless sensors: scan for ``--duration`` seconds and
list every BTHome v2 device heard - its address, signal strength, the decoded values in the
units the agent reports (pressure in MPa), whether it encrypts, and whether the bind key
given with ``--key ADDRESS=HEX`` decrypts it (a wrong key shows as "wrong key"). Unlike the
agent it accepts every device: this is how one finds the address to put in ``[[ble.device]]``.
A live table is redrawn as adverts arrive; ``--json`` prints one JSON object per advert.

Exit status: 0 the scan ran (even if nothing was heard), 1 the scan could not start or BLE
support is not installed, 2 bad options. bleak and bthome-ble are imported inside the command.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData
    from rich.table import Table

    from edge.drivers.ble import Decoded

__all__ = ["register"]

_STATUS = {  # Outcome value -> what a technician reads
    "ok": "ok",
    "decrypt_failed": "no key",  # refined to "wrong key" when a key was given
    "downgrade": "plaintext, key given",
    "bad_payload": "bad payload",
}


def register(app: typer.Typer) -> None:
    """Add the ``ble`` command to the ``firegate diag`` group."""
    app.command("ble")(ble)


def _fail(message: str, code: int = 2) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def _keys(pairs: list[str]) -> dict[str, bytes]:
    from edge.config.ble import KEY_HINT, KEY_PATTERN, parse_mac

    keys: dict[str, bytes] = {}
    for pair in pairs:
        address, _, hexkey = pair.partition("=")
        try:
            mac = parse_mac(address.strip())
        except ValueError as exc:
            raise _fail(f"--key {pair.split('=')[0]!r}: {exc}") from None
        if re.fullmatch(KEY_PATTERN, hexkey.strip()) is None:
            raise _fail(f"--key {mac}: the key must be {KEY_HINT}")
        keys[mac] = bytes.fromhex(hexkey.strip())
    return keys


@dataclass
class _Row:
    """The latest state of one device heard."""

    address: str
    name: str
    rssi: int = 0
    adverts: int = 0
    encrypted: bool = False
    status: str = ""
    values: str = ""


def _item(decoded: Decoded, device: BLEDevice, adv: AdvertisementData, key_given: bool,
          elapsed: float) -> dict[str, Any]:
    """One advert as plain data (the ``--json`` line)."""
    from edge.drivers.ble import measurements_of

    values: dict[str, float | bool | str] = {}
    units: dict[str, str] = {}
    for key, _, value, unit, _ in measurements_of(decoded):
        values[key], units[key] = value, unit
    values.update(decoded.binary)
    values.update(decoded.events)
    status = _STATUS.get(decoded.outcome.value, decoded.outcome.value)
    if decoded.outcome.value == "decrypt_failed" and key_given:
        status = "wrong key"
    return {"t": round(elapsed, 3), "address": device.address.upper(),
            "name": adv.local_name or device.name, "rssi": adv.rssi,
            "encrypted": decoded.encrypted, "outcome": decoded.outcome.value, "status": status,
            "problem": decoded.problem, "packet_id": decoded.packet_id, "values": values,
            "units": units}


def _text(item: dict[str, Any]) -> str:
    parts = []
    for key, value in item["values"].items():
        if isinstance(value, bool):
            parts.append(f"{key} {'on' if value else 'off'}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:g} {item['units'].get(key, '')}".rstrip())
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts) or (item["problem"] or "")


def _table(rows: dict[str, _Row], others: int, elapsed: float) -> Table:
    from rich.table import Table

    from firegate.textsafe import escaped

    table = Table(title=f"BTHome devices heard ({elapsed:.0f} s)",
                  caption=f"{others} advert(s) from other devices")
    table.add_column("address", no_wrap=True)  # it is what gets copied into the config
    table.add_column("name")
    table.add_column("rssi", justify="right", no_wrap=True)
    table.add_column("adverts", justify="right")
    table.add_column("encrypted")
    table.add_column("status")
    table.add_column("last values")
    for row in sorted(rows.values(), key=lambda r: r.address):  # the name is from the air
        table.add_row(escaped(row.address), escaped(row.name), f"{row.rssi} dBm",
                      str(row.adverts), "yes" if row.encrypted else "no", escaped(row.status),
                      escaped(row.values))
    return table


def ble(
    duration: Annotated[float, typer.Option(
        "--duration", "-d", min=0.5, help="Seconds to listen.")] = 10.0,
    adapter: Annotated[str, typer.Option(help="BlueZ adapter.")] = "hci0",
    active: Annotated[bool, typer.Option(
        "--active", help="Active scan (for BlueZ without advertisement monitors).")] = False,
    key: Annotated[list[str] | None, typer.Option(
        "--key", metavar="ADDRESS=HEX",
        help="Bind key of an encrypted device, 32 hex characters. Repeatable.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per advert instead of the table.")] = False,
) -> None:
    """Scan for BTHome v2 sensors and show every one heard, with its decoded values."""
    from edge.config.ble import ADAPTER_PATTERN, BleConfig, ScanningMode
    from edge.drivers.ble import BleUnavailable, require_ble

    if re.fullmatch(ADAPTER_PATTERN, adapter) is None:
        raise _fail(f"--adapter must be an adapter name like hci0, got {adapter!r}")
    keys = _keys(key or [])
    try:
        require_ble()
    except BleUnavailable as exc:
        raise _fail(str(exc), 1) from None
    config = BleConfig(adapter=adapter,
                       scanning_mode=ScanningMode.ACTIVE if active else ScanningMode.PASSIVE)
    try:
        rows, others = asyncio.run(_scan(config, keys, duration, as_json))
    except _ScanFailed as exc:
        raise _fail(f"cannot scan on {adapter}: {exc}", 1) from None
    if not as_json:
        print(f"{len(rows)} BTHome device(s) and {others} other advert(s) in {duration:g} s")


class _ScanFailed(Exception):
    pass


async def _scan(config: Any, keys: dict[str, bytes], duration: float,
                as_json: bool) -> tuple[dict[str, _Row], int]:
    from rich.console import Console
    from rich.live import Live

    from edge.drivers.ble import Outcome, decode_advert, new_scanner

    rows: dict[str, _Row] = {}
    others = 0
    started = time.monotonic()
    live: Live | None = None

    def heard(device: BLEDevice, adv: AdvertisementData) -> None:
        nonlocal others
        address = device.address.upper()
        decoded = decode_advert(device, adv, keys.get(address))
        if decoded.outcome is Outcome.NOT_BTHOME:
            others += 1
            return
        item = _item(decoded, device, adv, address in keys, time.monotonic() - started)
        if as_json:
            print(json.dumps(item, ensure_ascii=False), flush=True)
            return
        row = rows.setdefault(address, _Row(address, item["name"] or ""))
        row.rssi, row.encrypted, row.status = adv.rssi, decoded.encrypted, item["status"]
        row.adverts += 1
        row.values = _text(item)
        if live is not None:
            live.update(_table(rows, others, time.monotonic() - started))

    scanner = new_scanner(config, heard)
    try:
        await asyncio.wait_for(scanner.start(), 20.0)
    except Exception as exc:  # BleakError, a missing adapter or bus: all "cannot scan"
        raise _ScanFailed(f"{type(exc).__name__}: {exc}") from None
    try:
        if as_json:
            await asyncio.sleep(duration)
        else:
            with Live(_table(rows, others, 0.0), console=Console(), refresh_per_second=4) as live:
                await asyncio.sleep(duration)
                live.update(_table(rows, others, time.monotonic() - started))
    finally:
        try:
            await asyncio.wait_for(scanner.stop(), 5.0)
        except Exception as exc:  # stopping a scanner whose BlueZ went away: nothing to do
            print(f"warning: scanner stop: {exc}", file=sys.stderr)
    return rows, others
