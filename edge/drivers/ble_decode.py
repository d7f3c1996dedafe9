"""BTHome v2 adverts decoded with bthome-ble and mapped to the record model.

:func:`decode_advert` takes one bleak advert and the device's bind key. It returns a
:class:`Decoded` with an :class:`Outcome`: OK, or the reason for a refusal, which the driver
(:mod:`edge.drivers.ble`) counts under that name. It keeps no state. Duplicate and replay rules
need the per-device history, so they live in the driver. :func:`measurements_of` and
:data:`BINARY_EVENTS` say which bthome-ble keys become measurements (with units as the wire
contract has them) and which become events.

The format and its rules: bthome.io/format (object ids, the device information byte) and
bthome.io/encryption (AES-CCM, the counter and MIC at the end of the payload).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from protocols.wire import EventType, Priority, Quantity

from .ble_imports import defer_ble_imports

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

__all__ = [
    "BINARY_EVENTS",
    "SERVICE_UUID",
    "STATE_TYPES",
    "Decoded",
    "Outcome",
    "decode_advert",
    "measurements_of",
    "split_key",
]

SERVICE_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
"""BTHome v2 service data UUID 0xFCD2, in the 128-bit form BlueZ and bleak use."""
_INFO_ENCRYPTED = 0x01  # device information byte, bthome.io/format: bit 0 encryption
_INFO_MAC_INCLUDED = 0x02  # bit 1: the advertiser's MAC follows the info byte
_COUNTER_AND_MIC = 8  # encrypted payload ends with counter (uint32 LE) + MIC (4 bytes)


# -- decoding: one advert, no state ------------------------------------------------------------


class Outcome(StrEnum):
    """What became of one advert; the refusals are the driver's counter names."""

    OK = "ok"
    NOT_BTHOME = "not_bthome"
    BAD_PAYLOAD = "bad_payload"
    DECRYPT_FAILED = "decrypt_failed"
    DOWNGRADE = "downgrade"


@dataclass(frozen=True, slots=True)
class Decoded:
    """One advert decoded by bthome-ble (keys are bthome-ble's: ``pressure``, ``door``...)."""

    outcome: Outcome
    encrypted: bool = False
    sensors: Mapping[str, float] = field(default_factory=dict)
    """Numeric objects in bthome-ble's units (pressure in hPa), without packet id and RSSI."""
    binary: Mapping[str, bool] = field(default_factory=dict)
    events: Mapping[str, str] = field(default_factory=dict)
    """Event objects, e.g. ``{"button": "press"}``."""
    packet_id: int | None = None
    counter: int | None = None
    """Encryption counter (authenticated when ``outcome`` is OK)."""
    problem: str | None = None
    """Why it was refused; with OK, a layout problem after the objects that were used."""

    def fingerprint(self) -> tuple[object, ...]:
        """Packet id and objects: equal fingerprints are the same packet sent again."""
        return (self.packet_id, tuple(sorted(self.sensors.items())),
                tuple(sorted(self.binary.items())), tuple(sorted(self.events.items())))


def decode_advert(device: BLEDevice, adv: AdvertisementData, key: bytes | None) -> Decoded:
    """Decode the BTHome v2 service data of one advert with bthome-ble.

    A fresh bthome-ble parser is used per advert, so the result holds exactly this advert's
    objects (its parser state accumulates values across updates); duplicate and replay
    rules live in the driver, which keeps the per-device state.
    """
    data = adv.service_data.get(SERVICE_UUID)
    if data is None:
        return Decoded(Outcome.NOT_BTHOME)
    if len(data) < 2:
        return Decoded(Outcome.BAD_PAYLOAD, problem=f"service data of {len(data)} byte(s)")
    info = data[0]
    if info >> 5 != 2:
        return Decoded(Outcome.BAD_PAYLOAD, problem=f"BTHome version {info >> 5}, expected 2")
    encrypted = bool(info & _INFO_ENCRYPTED)
    payload = data[7:] if info & _INFO_MAC_INCLUDED else data[1:]
    if encrypted and key is None:
        return Decoded(Outcome.DECRYPT_FAILED, True, problem="encrypted, but no key configured")
    if encrypted and len(payload) <= _COUNTER_AND_MIC:
        return Decoded(Outcome.BAD_PAYLOAD, True, problem="encrypted payload too short")
    if not encrypted and key is not None:
        return Decoded(Outcome.DOWNGRADE, problem="plaintext advert from a device with a key")

    defer_ble_imports()
    from bthome_ble import BTHomeBluetoothDeviceData
    from habluetooth import BluetoothServiceInfoBleak

    parser = BTHomeBluetoothDeviceData(key)
    info_obj = BluetoothServiceInfoBleak.from_scan("firegate", device, adv, time.monotonic(),
                                                   False)
    try:
        update = parser.update(info_obj)
    except Exception as exc:  # bytes from the air reached a parser bug: a bad payload, counted
        return Decoded(Outcome.BAD_PAYLOAD, encrypted, problem=f"bthome-ble: {exc!r}"[:200])
    if encrypted and not parser.bindkey_verified:
        return Decoded(Outcome.DECRYPT_FAILED, True, problem="wrong key (MIC mismatch)")

    sensors: dict[str, float] = {}
    packet_id = None
    for dkey, value in update.entity_values.items():
        native = value.native_value
        if isinstance(native, bool) or not isinstance(native, int | float):
            continue  # strings, timestamps, raw bytes: nothing we map
        if dkey.key == "packet_id":
            packet_id = int(native)
        elif dkey.key != "signal_strength":  # RSSI is taken from the advert itself
            sensors[dkey.key] = float(native)
    binary = {dkey.key: bool(v.native_value) for dkey, v in update.binary_entity_values.items()
              if v.native_value is not None}
    events = {dkey.key: e.event_type for dkey, e in update.events.items()}
    problem = None if encrypted else _layout_problem(payload)
    if packet_id is None and not (sensors or binary or events):
        return Decoded(Outcome.BAD_PAYLOAD, encrypted, problem=problem or "no BTHome objects")
    counter = int.from_bytes(data[-8:-4], "little") if encrypted else None
    return Decoded(Outcome.OK, encrypted, sensors, binary, events, packet_id, counter, problem)


def _layout_problem(payload: bytes) -> str | None:
    """Check that plaintext objects parse whole, with bthome-ble's own object table.

    bthome-ble stops at an unknown id or a short object and only logs it; this makes it a
    counted ``bad_payload``. (An encrypted payload cannot be cut: its MIC would not match.)
    """
    from bthome_ble.const import MEAS_TYPES

    pos = 0
    while pos < len(payload):
        obj = payload[pos]
        meas = MEAS_TYPES.get(obj)
        if meas is None:
            return f"unknown object id 0x{obj:02x} at payload byte {pos}"
        if meas.data_format in ("raw", "string", "command"):  # a length byte follows the id
            if pos + 1 >= len(payload):
                return f"object 0x{obj:02x} at payload byte {pos} has no length byte"
            size = payload[pos + 1]
            size = 1 + (size & 0x1F) if meas.data_format == "command" else size
            start = pos + 2
        else:
            size, start = meas.data_length, pos + 1
        if start + size > len(payload):
            return f"object 0x{obj:02x} at payload byte {pos} is cut short"
        pos = start + size
    return None


# -- mapping to the record model ---------------------------------------------------------------

# bthome-ble key -> (quantity, unit, divisor). BTHome 0x04 carries pressure in hPa; water
# pressure is reported in MPa (1 MPa = 10 000 hPa; docs/simulators.md "Pressure").
_MEASURED: Mapping[str, tuple[Quantity, str, float]] = {
    "pressure": (Quantity.PRESSURE, "MPa", 10_000.0),
    "temperature": (Quantity.TEMPERATURE, "°C", 1.0),
    "humidity": (Quantity.HUMIDITY, "%", 1.0),
    "moisture": (Quantity.MOISTURE, "%", 1.0),
    "battery": (Quantity.BATTERY, "%", 1.0),
    "voltage": (Quantity.VOLTAGE, "V", 1.0),
}

# Binary objects that a person must know about -> (event type, priority override). Several
# objects of one type on one device (smoke and heat) are OR-ed: raised while any is on.
BINARY_EVENTS: Mapping[str, tuple[EventType, Priority | None]] = {
    "door": (EventType.DOOR_OPEN, None),
    "window": (EventType.DOOR_OPEN, None),
    "opening": (EventType.DOOR_OPEN, None),
    "garage_door": (EventType.DOOR_OPEN, None),
    "smoke": (EventType.FIRE_ALARM, None),
    "heat": (EventType.FIRE_ALARM, None),  # a heat detector in alarm is a fire alarm
    # Combustible gas / CO detectors report through the fire alarm class (wire doc).
    "gas": (EventType.THRESHOLD_HIGH, Priority.FIRE),
    "carbon_monoxide": (EventType.THRESHOLD_HIGH, Priority.FIRE),
    "problem": (EventType.FAULT, None),
    "tamper": (EventType.SUPERVISORY, None),
    "battery": (EventType.POWER_FAULT, None),  # binary battery: on = low
}


STATE_TYPES = frozenset(t for t, _ in BINARY_EVENTS.values())
"""Conditions this driver raises and restores from binary objects (seeded after a restart)."""


def split_key(key: str) -> tuple[str, int]:
    """bthome-ble names repeated objects ``temperature_1``, ``temperature_2``."""
    base, _, suffix = key.rpartition("_")
    if base and suffix.isdigit():
        return base, int(suffix)
    return key, 1


def measurements_of(decoded: Decoded) -> list[tuple[str, Quantity, float, str, int]]:
    """``(key, quantity, value, unit, index)`` for every numeric object we report."""
    out = []
    for key, raw in decoded.sensors.items():
        base, index = split_key(key)
        spec = _MEASURED.get(base)
        if spec is not None:
            quantity, unit, divisor = spec
            value = raw if divisor == 1.0 else round(raw / divisor, 9)
            out.append((key, quantity, value, unit, index))
    return out
