"""BTHome v2 advertisement encoder: typed measurements in, service data for UUID 0xFCD2 out.

bthome-ble (which the edge agent uses) only parses, so the simulator needs the other direction.
This module is pure: no D-Bus, no asyncio; the bytes it returns go into BlueZ's ``ServiceData``
property under :data:`SERVICE_UUID`.

Layout (bthome.io/format, "BTHome v2"): one *device information* byte, then objects, each an
object id followed by a fixed-length little-endian value; objects are sent in ascending id order
(receivers warn otherwise). With encryption (bthome.io/encryption) the objects are replaced by
``AES-CCM(objects) || counter (uint32 LE) || MIC (4 bytes)`` and bit 0 of the info byte is set.

Pressure: BTHome carries pressure as object 0x04, uint24 in units of 0.01 hPa (1 Pa steps,
0 .. 167 772.15 hPa = 0 .. 16.78 MPa). Hydrant and sprinkler transmitters report *gauge* pressure
in MPa (typically 0-1.6 MPa), so the simulator sends ``MPa * 10 000`` hPa in that object, with
1 Pa resolution: :func:`mpa_to_hpa` and :func:`hpa_to_mpa` are the agreed conversion. The BTHome
object says "pressure in hPa" and nothing about gauge vs. absolute: the agent knows a sensor is a
water-pressure transmitter from its configuration, not from the advertisement.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

SERVICE_UUID16 = 0xFCD2
SERVICE_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
"""Full 128-bit form, as BlueZ and bleak key ``ServiceData``."""

# Device information byte (bthome.io/format): bit 0 encryption, bit 2 trigger based
# ("sleepy" device that only sends on change), bits 5-7 the BTHome version (2).
INFO_ENCRYPTED = 0x01
INFO_TRIGGER_BASED = 0x04
INFO_VERSION_2 = 2 << 5

KEY_LENGTH = 16
"""AES-128 bind key length (bthome.io/encryption: 16 bytes, 32 hex characters)."""
MIC_LENGTH = 4
"""AES-CCM tag length used by BTHome."""

PA_PER_MPA = 1_000_000
HPA_PER_MPA = 10_000


class ObjectId(IntEnum):
    """BTHome v2 object ids this simulator sends (bthome.io/format, sensor/binary/event tables)."""

    PACKET_ID = 0x00
    BATTERY = 0x01
    TEMPERATURE = 0x02
    HUMIDITY = 0x03
    PRESSURE = 0x04
    OPENING = 0x11
    MOISTURE = 0x14
    DOOR = 0x1A
    PROBLEM = 0x26
    SMOKE = 0x29
    TAMPER = 0x2B
    BUTTON = 0x3A


class ButtonEvent(IntEnum):
    """Event codes of the BTHome button object 0x3A."""

    NONE = 0x00
    PRESS = 0x01
    DOUBLE_PRESS = 0x02
    TRIPLE_PRESS = 0x03
    LONG_PRESS = 0x04
    HOLD_PRESS = 0x80


@dataclass(frozen=True, slots=True)
class ObjectLayout:
    """How one object's value is put on the air: ``raw = round(value / factor)``."""

    length: int
    signed: bool = False
    factor: float = 1.0
    binary: bool = False


# The code table is data (bthome.io/format). Factors are the spec's "factor" column.
LAYOUTS: Mapping[ObjectId, ObjectLayout] = {
    ObjectId.PACKET_ID: ObjectLayout(1),                            # uint8, wraps
    ObjectId.BATTERY: ObjectLayout(1),                              # uint8, %
    ObjectId.TEMPERATURE: ObjectLayout(2, signed=True, factor=0.01),  # sint16, 0.01 °C
    ObjectId.HUMIDITY: ObjectLayout(2, factor=0.01),                # uint16, 0.01 %
    ObjectId.PRESSURE: ObjectLayout(3, factor=0.01),                # uint24, 0.01 hPa
    ObjectId.OPENING: ObjectLayout(1, binary=True),                 # 1 = open
    ObjectId.MOISTURE: ObjectLayout(2, factor=0.01),                # uint16, 0.01 %
    ObjectId.DOOR: ObjectLayout(1, binary=True),                    # 1 = open
    ObjectId.PROBLEM: ObjectLayout(1, binary=True),                 # 1 = problem
    ObjectId.SMOKE: ObjectLayout(1, binary=True),                   # 1 = smoke detected
    ObjectId.TAMPER: ObjectLayout(1, binary=True),                  # 1 = tampered
    ObjectId.BUTTON: ObjectLayout(1),                               # ButtonEvent code
}

Value = float | int | bool
Measurement = tuple[ObjectId, Value]


class EncodeError(ValueError):
    """A value that the object cannot carry (out of range, wrong kind) or a bad key/MAC."""


def mpa_to_hpa(mpa: float) -> float:
    """Gauge pressure in MPa to the hPa value sent in object 0x04 (see module docstring)."""
    return mpa * HPA_PER_MPA


def hpa_to_mpa(hpa: float) -> float:
    """Inverse of :func:`mpa_to_hpa`, for the receiving side."""
    return hpa / HPA_PER_MPA


def parse_mac(address: str) -> bytes:
    """``"A4:C1:38:00:00:01"`` -> 6 bytes in the written (most significant first) order."""
    parts = address.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise EncodeError(f"MAC address must look like AA:BB:CC:DD:EE:FF, got {address!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise EncodeError(f"MAC address must be hexadecimal, got {address!r}") from None


def parse_key(text: str) -> bytes:
    """A bind key written as 32 hex characters -> 16 bytes."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise EncodeError("bind key must be 32 hexadecimal characters") from None
    if len(key) != KEY_LENGTH:
        raise EncodeError(f"bind key must be {KEY_LENGTH} bytes (32 hex characters), "
                          f"got {len(key)} bytes")
    return key


def encode_object(object_id: ObjectId, value: Value) -> bytes:
    """One object: id byte + little-endian value scaled by the layout's factor."""
    layout = LAYOUTS[object_id]
    if layout.binary:
        if not isinstance(value, bool) and value not in (0, 1):
            raise EncodeError(f"{object_id.name} is a binary object: expected a bool, "
                              f"got {value!r}")
        raw = int(bool(value))
    else:
        raw = round(float(value) / layout.factor)
    bits = 8 * layout.length
    if layout.signed:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, (1 << bits) - 1
    if not low <= raw <= high:
        raise EncodeError(f"{object_id.name}: {value!r} is outside "
                          f"{low * layout.factor:g} .. {high * layout.factor:g}")
    return bytes([object_id]) + raw.to_bytes(layout.length, "little", signed=layout.signed)


def encode_objects(measurements: Iterable[Measurement]) -> bytes:
    """All objects in ascending object-id order (stable for repeated ids), concatenated."""
    ordered = sorted(measurements, key=lambda m: int(m[0]))
    return b"".join(encode_object(object_id, value) for object_id, value in ordered)


def device_info(*, encrypted: bool, trigger_based: bool = False) -> int:
    """The device information byte for BTHome v2."""
    info = INFO_VERSION_2
    if encrypted:
        info |= INFO_ENCRYPTED
    if trigger_based:
        info |= INFO_TRIGGER_BASED
    return info


def nonce(mac: bytes, info: int, counter: int) -> bytes:
    """AES-CCM nonce (bthome.io/encryption): MAC (6) + UUID 0xFCD2 little-endian (2) + device
    info byte (1) + counter (uint32 LE, 4)."""
    return mac + struct.pack("<HBI", SERVICE_UUID16, info, counter)


def encrypt_objects(objects: bytes, *, key: bytes, mac: bytes, info: int, counter: int) -> bytes:
    """``ciphertext || counter || MIC`` for the already encoded objects."""
    if len(key) != KEY_LENGTH:
        raise EncodeError(f"bind key must be {KEY_LENGTH} bytes, got {len(key)}")
    if len(mac) != 6:
        raise EncodeError(f"MAC must be 6 bytes, got {len(mac)}")
    if not 0 <= counter <= 0xFFFF_FFFF:
        raise EncodeError(f"encryption counter must fit uint32, got {counter}")
    try:
        # cryptography comes with bthome-ble (the ``ble`` extra); only encryption needs it.
        from cryptography.hazmat.primitives.ciphers.aead import AESCCM
    except ImportError as exc:
        raise EncodeError("encrypted adverts need the 'cryptography' package: "
                          "pip install 'firegate[ble]'") from exc
    sealed = AESCCM(key, tag_length=MIC_LENGTH).encrypt(nonce(mac, info, counter), objects, None)
    # AESCCM appends the tag; the counter goes between ciphertext and MIC on the air.
    ciphertext, mic = sealed[:-MIC_LENGTH], sealed[-MIC_LENGTH:]
    return ciphertext + struct.pack("<I", counter) + mic


def encode_service_data(
    measurements: Iterable[Measurement],
    *,
    key: bytes | None = None,
    mac: bytes | None = None,
    counter: int = 0,
    trigger_based: bool = False,
) -> bytes:
    """Service data for UUID 0xFCD2: info byte + objects, encrypted when ``key`` is given.

    ``mac`` (the advertiser's address, 6 bytes) and ``counter`` are needed only for encryption;
    the receiver rebuilds the nonce from the address it saw the advertisement from.
    """
    objects = encode_objects(measurements)
    info = device_info(encrypted=key is not None, trigger_based=trigger_based)
    if key is None:
        return bytes([info]) + objects
    if mac is None:
        raise EncodeError("encryption needs the advertiser's MAC address for the nonce")
    return bytes([info]) + encrypt_objects(objects, key=key, mac=mac, info=info, counter=counter)
