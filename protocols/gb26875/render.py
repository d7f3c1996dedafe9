"""Plain-data views of frames and objects, for JSON output and for people (pure functions).

Every value a technician may need is named: code-table entries carry their Chinese and English
names, state words their set flags, analog values their scaled value and unit.
"""

from __future__ import annotations

import dataclasses
from enum import IntFlag
from typing import Any

from protocols.gb26875.adu import SPECS, ApplicationData, RawApplicationData, type_name
from protocols.gb26875.constants import Command, command_name
from protocols.gb26875.fields import ComponentAddress
from protocols.gb26875.frame import Frame, address_to_int, checksum
from protocols.gb26875.objects import AnalogValue, InfoObject
from protocols.gb26875.profile import STANDARD, Profile
from protocols.gb26875.tables import (
    ANALOG_TYPES,
    COMPONENT_TYPES,
    SYSTEM_TYPES,
    flag_names,
    flag_names_zh,
    lookup,
)
from protocols.gb26875.timelabel import TimeLabel

JSON = dict[str, Any]


def time_to_data(t: TimeLabel) -> str:
    """ISO local time, or ``invalid(hex)`` for an impossible label."""
    return str(t).replace(" ", "T") if t.is_valid else str(t)


def address_to_data(addr: ComponentAddress, profile: Profile = STANDARD) -> JSON:
    """All views of a component address."""
    out: JSON = {"raw": addr.raw.hex(), "uint32": addr.value}
    if profile.component_address_style == "loop_point":
        out["loop"], out["point"] = addr.loop, addr.point
    return out


def _value(name: str, value: object, profile: Profile) -> object:
    if isinstance(value, IntFlag):
        return {"raw": int(value), "flags": flag_names(value), "zh": flag_names_zh(value)}
    if isinstance(value, TimeLabel):
        return time_to_data(value)
    if isinstance(value, ComponentAddress):
        return address_to_data(value, profile)
    if name in ("system_type", "component_type") and isinstance(value, int):
        table = SYSTEM_TYPES if name == "system_type" else COMPONENT_TYPES
        code = lookup(table, value)
        return {"value": value, "zh": code.zh, "en": code.en}
    return value


def object_to_data(obj: InfoObject, profile: Profile = STANDARD) -> JSON:
    """One information object as a dict of named fields."""
    out: JSON = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if f.name == "description_raw":
            continue
        if f.name == "time" and value is None:
            continue
        out[f.name] = _value(f.name, value, profile)
    if isinstance(obj, AnalogValue):
        spec = ANALOG_TYPES.get(obj.analog_type)
        out["analog_type"] = {
            "value": obj.analog_type,
            "zh": spec.zh if spec else lookup({}, obj.analog_type).zh,
            "en": spec.en if spec else lookup({}, obj.analog_type).en,
        }
        out["value"] = obj.value
        out["unit"] = obj.unit
    return out


def adu_to_data(adu: ApplicationData | RawApplicationData | None,
                profile: Profile = STANDARD) -> JSON | None:
    """An ADU as plain data."""
    if adu is None:
        return None
    if isinstance(adu, RawApplicationData):
        return {"type_mark": adu.type_mark, "type": type_name(adu.type_mark),
                "count": adu.count, "raw": adu.payload.hex()}
    spec = SPECS[adu.type_mark]
    return {
        "type_mark": adu.type_mark,
        "type": type_name(adu.type_mark),
        "zh": spec.zh,
        "count": len(adu.objects),
        "objects": [object_to_data(o, profile) for o in adu.objects],
    }


def frame_to_data(frame: Frame, profile: Profile = STANDARD) -> JSON:
    """A frame's header as plain data (the ADU is rendered separately)."""
    try:
        zh = Command(frame.command).zh
    except ValueError:
        zh = "用户自定义" if frame.command >= 128 else "预留"
    body = frame.encode()[2:-3]
    return {
        "serial": frame.serial,
        "version": f"{frame.version[0]}.{frame.version[1]}",
        "time": time_to_data(frame.time),
        "source": frame.source.hex(),
        "source_int": address_to_int(frame.source, profile.address_byte_order),
        "destination": frame.destination.hex(),
        "destination_int": address_to_int(frame.destination, profile.address_byte_order),
        "command": {"value": frame.command, "name": command_name(frame.command), "zh": zh},
        "adu_length": len(frame.adu),
        "checksum": f"0x{checksum(body):02x}",
    }
