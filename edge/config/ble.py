"""The ``[ble]`` section: the adapter that scans, and the BTHome sensors the gateway accepts.

Only the devices listed as ``[[ble.device]]`` are accepted (an allow-list by MAC address):
anything else the radio hears is counted as ``ignored`` and dropped. A device's bind key (the
BTHome v2 AES-CCM key, bthome.io/encryption) may be written inline, read from a file
(``key_file``) or from the environment (``key_env``). Nothing here touches the radio:
``firegate check-config`` runs exactly this code.

Offline detection: a device not heard for ``offline_after_s`` seconds raises ``sensor_offline``.
The default is ``expected_interval_s`` times ``[ble] offline_factor`` (3 by default, so two
lost advertisements in a row are tolerated); an explicit ``offline_after_s`` wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from common.config import Table

__all__ = [
    "BleConfig",
    "BleDeviceConfig",
    "DeviceKind",
    "ScanningMode",
    "parse_ble",
    "parse_mac",
]

MAC_PATTERN = r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}"
MAC_HINT = "a MAC address like A4:C1:38:00:00:01"
KEY_PATTERN = r"[0-9A-Fa-f]{32}"
KEY_HINT = "32 hexadecimal characters (the 16-byte BTHome bind key)"
ADAPTER_PATTERN = r"hci[0-9]{1,2}"
NAME_MAX = 64  # protocols.wire Source.description limit: the device name goes there


class ScanningMode(StrEnum):
    """How the adapter listens.

    ``passive`` (the default) only listens: the gateway never transmits scan requests. On
    Linux it needs BlueZ >= 5.56 with experimental features (advertisement monitors) and a
    kernel >= 5.10; ``active`` works with any BlueZ and also fetches scan responses, at the
    cost of transmitting a scan request to every advertiser.
    """

    PASSIVE = "passive"
    ACTIVE = "active"


class DeviceKind(StrEnum):
    """What a device's BTHome objects mean beyond their own type.

    Every object already says what it is (door, smoke, pressure...), so most devices are
    ``sensor``. A ``callpoint`` is a wireless manual call point: a button press (object
    0x3A) on it is a fire alarm.
    """

    SENSOR = "sensor"
    CALLPOINT = "callpoint"


@dataclass(frozen=True, slots=True)
class BleDeviceConfig:
    """One accepted BTHome device (``[[ble.device]]``)."""

    address: str
    """MAC address, upper case (``A4:C1:38:00:00:01``); the source id is ``ble/<address>``."""
    name: str | None = None
    """Shown as the source description (``stair 2F fire door``)."""
    key: bytes | None = field(default=None, repr=False)
    """16-byte bind key: the device must send encrypted adverts (plaintext is refused)."""
    kind: DeviceKind = DeviceKind.SENSOR
    expected_interval_s: float = 60.0
    """How often the device advertises (its configured interval)."""
    offline_after_s: float = 180.0
    """Silence after which ``sensor_offline`` is raised (resolved: never None)."""


@dataclass(frozen=True, slots=True)
class BleConfig:
    """The ``[ble]`` section."""

    adapter: str = "hci0"
    scanning_mode: ScanningMode = ScanningMode.PASSIVE
    offline_factor: float = 3.0
    """Default ``offline_after_s`` = ``expected_interval_s`` x this."""
    restart_backoff_s: float = 1.0
    """First wait before restarting a failed scanner; doubles per failure."""
    restart_backoff_max_s: float = 60.0
    """Longest wait between scanner restarts."""
    watchdog_s: float = 5.0
    """How often the adapter is checked (present, powered) while scanning."""
    devices: tuple[BleDeviceConfig, ...] = ()

    def device(self, address: str) -> BleDeviceConfig | None:
        """The configured device with this MAC address (any case), or None."""
        wanted = address.upper()
        return next((d for d in self.devices if d.address == wanted), None)


def parse_mac(text: str) -> str:
    """Normalise a MAC address to upper case; ValueError if it is not ``AA:BB:CC:DD:EE:FF``."""
    if re.fullmatch(MAC_PATTERN, text) is None:
        raise ValueError(f"must be {MAC_HINT}, got {text!r}")
    return text.upper()


def parse_ble(t: Table) -> BleConfig:
    """Read the ``[ble]`` table (``t``); ends with ``t.finish()``."""
    adapter = t.text("adapter", "hci0", pattern=ADAPTER_PATTERN, hint="an adapter name like hci0")
    mode = t.choice("scanning_mode", ScanningMode, ScanningMode.PASSIVE)
    factor = t.number("offline_factor", 3.0, min=1.5, max=100.0)
    backoff = t.number("restart_backoff_s", 1.0, min=0.05, max=600.0)
    backoff_max = t.number("restart_backoff_max_s", 60.0, min=0.05, max=3600.0)
    watchdog = t.number("watchdog_s", 5.0, min=0.05, max=600.0)
    if backoff_max < backoff:
        t.fail("restart_backoff_max_s",
               f"must be at least restart_backoff_s ({backoff:g}), got {backoff_max:g}")
    devices = tuple(_device(d, factor) for d in t.tables("device"))
    seen: dict[str, int] = {}
    for i, dev in enumerate(devices):
        if dev.address in seen:
            t.fail(f"device[{i}].address",
                   f"{dev.address} is already declared in device[{seen[dev.address]}]")
        seen[dev.address] = i
    t.finish()
    return BleConfig(adapter, mode, factor, backoff, backoff_max, watchdog, devices)


def _device(t: Table, factor: float) -> BleDeviceConfig:
    address = t.text("address", pattern=MAC_PATTERN, hint=MAC_HINT).upper()
    name = t.opt_text("name", max_len=NAME_MAX)
    secret = t.secret("key")
    key = None
    if secret is not None:
        text = secret.strip()
        if re.fullmatch(KEY_PATTERN, text) is None:
            given = next(k for k in ("key", "key_file", "key_env") if t.has(k))
            # The value itself is never echoed: it is a secret (or garbage close to one).
            t.fail(given, f"must give {KEY_HINT}, got {len(text)} characters")
        key = bytes.fromhex(text)
    kind = t.choice("kind", DeviceKind, DeviceKind.SENSOR)
    interval = t.number("expected_interval_s", 60.0, min=0.1, max=86_400.0)
    offline = t.opt_number("offline_after_s", min=0.5, max=7 * 86_400.0)
    if offline is None:
        offline = interval * factor
    elif offline <= interval:
        t.fail("offline_after_s",
               f"must be greater than expected_interval_s ({interval:g}), got {offline:g}")
    t.finish()
    return BleDeviceConfig(address, name, key, kind, interval, offline)
