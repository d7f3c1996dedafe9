"""Dialect profiles: vendor differences as data, not as branches spread through the decoder.

A :class:`Profile` says everything a device may do differently from the standard text (see
``docs/gb26875.md`` and the reference notes §1.5, §5 and §7). The :data:`STANDARD` profile follows
GB/T 26875.3-2011; the others record dialects documented for real devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from protocols.gb26875.constants import STD_MAX_ADU, Command


@dataclass(frozen=True, slots=True)
class Profile:
    """How one device family speaks GB/T 26875.3."""

    name: str = "standard"
    description: str = "GB/T 26875.3-2011 as written"
    # Addresses are opaque 6-byte IDs (表1: "低字节先传"); this only changes their integer view.
    address_byte_order: Literal["little", "big"] = "little"
    # 表1 caps the ADU at 1024 bytes; some devices cap it lower (Hikvision: 512).
    max_adu: int = STD_MAX_ADU
    # Per-object time labels are fixed per type (图5 note, §8.2.1). A dialect may add them to
    # types that have none, or leave them out of types that have one.
    extra_time_labels: frozenset[int] = frozenset()
    missing_time_labels: frozenset[int] = frozenset()
    # Reference checklist item 4: if the objects do not fill the ADU, also try the other size.
    tolerant_object_sizes: bool = True
    # 表1: serials start at 0 when the connection opens; some devices start at 1.
    serial_start: int = 0
    # Version bytes to send (表1 bytes 5-6: main version "fixed value 1", user version).
    version: tuple[int, int] = (1, 0)
    # Non-standard link supervision: a keep-alive command byte (Dahua: 0x07, 保活帧) ...
    keepalive_command: int | None = None
    # ... or a 1-byte ADU "handshake" in command 2, answered by command 3 carrying a 1-byte ADU.
    handshake_request: bytes | None = None
    handshake_reply: bytes | None = None
    # Confirm/deny time label: the responder's own time, or an echo of the request's (§5).
    confirm_time: Literal["own", "echo"] = "own"
    # Which command byte carries the control types 89 (initialise) and 91 (check-post): the
    # standard only names 90 (time sync) under command 1; a receiver accepts both 1 and 4.
    control_command: int = Command.CONTROL
    # How to show a component address: uint32 (most) or loop + point, 2 bytes LE each (Hikvision).
    component_address_style: Literal["uint32", "loop_point"] = "uint32"

    def __post_init__(self) -> None:
        if not 0 < self.max_adu <= 0xFFFF:
            raise ValueError("max_adu must be 1..65535")
        if self.serial_start not in (0, 1):
            raise ValueError("serial_start must be 0 or 1")
        if self.extra_time_labels & self.missing_time_labels:
            raise ValueError("a type cannot both add and omit its time label")

    def has_time_label(self, type_mark: int, standard: bool) -> bool:
        """Whether objects of ``type_mark`` carry a 6-byte time label under this profile."""
        if type_mark in self.extra_time_labels:
            return True
        if type_mark in self.missing_time_labels:
            return False
        return standard


STANDARD = Profile()

HIKVISION = Profile(
    name="hikvision",
    description="Hikvision UITD manual: device address is the SN/IMEI's last 12 digits sent "
                "big-endian, ADU at most 512 bytes, serials count from 1",
    address_byte_order="big",
    max_adu=512,
    serial_start=1,
    version=(1, 1),
    component_address_style="loop_point",
)

DAHUA = Profile(
    name="dahua",
    description="Dahua dialect: adds command 0x07 (保活帧, keep-alive) from the reserved range",
    keepalive_command=0x07,
)

HANDSHAKE = Profile(
    name="handshake",
    description="Devices seen in captures that open with a 1-byte ADU 0x16 in command 2 "
                "(握手请求), answered by command 3 with ADU 0x17; version bytes 10 00",
    handshake_request=b"\x16",
    handshake_reply=b"\x17",
    version=(0x10, 0x00),
    confirm_time="echo",
)

EXTRA_TIME_LABELS = Profile(
    name="extra-time-labels",
    description="A vendor parser reads a 6-byte time label after every object of types "
                "5, 6, 7, 25 and 26 as well",
    extra_time_labels=frozenset({5, 6, 7, 25, 26}),
)

NO_TIME_LABELS = Profile(
    name="no-time-labels",
    description="Devices that leave the per-object time label out of state, analog and "
                "operation uploads (types 1, 2, 3, 4, 21, 24)",
    missing_time_labels=frozenset({1, 2, 3, 4, 21, 24}),
)

PROFILES: Mapping[str, Profile] = {
    p.name: p for p in (STANDARD, HIKVISION, DAHUA, HANDSHAKE, EXTRA_TIME_LABELS, NO_TIME_LABELS)
}


def get_profile(name: str) -> Profile:
    """A built-in profile by name, with an error that lists the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown GB/T 26875.3 profile {name!r}; known: "
                         + ", ".join(sorted(PROFILES))) from None
