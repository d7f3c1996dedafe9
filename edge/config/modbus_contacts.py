"""Contacts in the gateway config: ``channels.<n>`` of a device, contacts of custom profiles.

An installer wiring a DI module writes what each terminal means, by its number::

    [[modbus.device]]
    unit = 7
    profile = "di-16"
    channels.1 = "valve:3F riser supply valve"                # meaning:description
    channels.2 = { meaning = "run", description = "fire pump 1", invert = true }
    channels.4 = { meaning = "valve", description = "test drain valve", normal = "closed" }

The same key overrides a built-in contact of a fixed profile (``fire-pump`` channel 3: its
auto/manual contact). Everything is checked here, naming the key, before a port is opened:
an unknown meaning, a channel the profile does not have, a ``normal`` the meaning does not
allow. docs/modbus-contacts.md is the design.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from common.config import Table
from protocols.registers import (
    MEANINGS,
    BitPoint,
    BitTable,
    Channel,
    ChannelBank,
    ChannelError,
    DeviceProfile,
    Meaning,
    RegisterType,
)

__all__ = [
    "DEBOUNCE_MS",
    "REPORT_INTERVAL_S",
    "parse_channels",
    "parse_contacts",
]

DEBOUNCE_MS = 500.0
"""Default time a contact change must hold before it is reported."""
REPORT_INTERVAL_S = 300.0
"""Default period of the ``state`` proof of life of each contact."""
_DESCRIPTION_MAX = 64  # protocols.wire Source.description
_MEANINGS_HINT = ", ".join(m.value for m in Meaning)
_FIELD = r"[a-z][a-z0-9_]{0,31}"
_FIELD_HINT = "1-32 lower-case letters, digits or '_', starting with a letter"


def _meaning(t: Table, key: str, value: str) -> Meaning:
    for m in Meaning:
        if m.value == value:
            return m
    t.fail(key, f"unknown meaning {value!r}; meanings: {_MEANINGS_HINT}")


def _normal(t: Table, key: str, meaning: Meaning) -> bool | None:
    """``normal = "open"`` etc.: a state name of the meaning, as its logical value."""
    value = t.raw(key, None)
    if value is None:
        return None
    states = MEANINGS[meaning].states
    if value not in states:
        t.fail(key, f"a {meaning} contact is {states[0]!r} or {states[1]!r}, got {value!r}")
    return states.index(str(value)) == 1


def _opt_flag(t: Table, key: str) -> bool | None:
    value = t.raw(key, None)
    if value is not None and not isinstance(value, bool):
        t.fail(key, f"must be true or false, got {type(value).__name__}")
    return value


def _channel(ct: Table, key: str, profile: DeviceProfile, n: int) -> Channel:
    value = ct.raw(key)
    known = next((b for b in profile.bit_points if b.channel == n), None)
    meaning: Meaning | None
    if isinstance(value, str):
        head, sep, rest = value.partition(":")
        meaning = _meaning(ct, key, head.strip()) if head.strip() or known is None else None
        description = rest.strip() if sep else None
        if description is not None and not 1 <= len(description) <= _DESCRIPTION_MAX:
            ct.fail(key, f"the description after ':' must be 1-{_DESCRIPTION_MAX} characters, "
                         f"got {len(description)}")
        return Channel(meaning, description)
    if not isinstance(value, Mapping):
        ct.fail(key, f'must be "meaning:description" (e.g. "valve:3F riser supply valve") '
                     f"or a table {{ meaning = ..., description = ..., invert = ..., "
                     f"normal = ... }}; meanings: {_MEANINGS_HINT}")
    t = ct.table(key, required=True)
    assert t is not None
    if t.has("meaning") or known is None:
        meaning = _meaning(t, "meaning", t.text("meaning", max_len=32))
    else:
        meaning = None
        t.raw("meaning", None)  # allowed: it keeps the profile's
    description = t.opt_text("description", max_len=_DESCRIPTION_MAX)
    invert = _opt_flag(t, "invert")
    effective = meaning or (known.meaning if known is not None else Meaning.VALVE)
    normal = _normal(t, "normal", effective)
    t.finish()
    return Channel(meaning, description, invert, normal)


def parse_channels(t: Table, profile: DeviceProfile, device_name: str) -> DeviceProfile:
    """The device's profile with its ``channels.<n>`` applied (``t``: the device table).

    Contacts keep their description as their records' source description; a built-in
    contact the installer did not describe is described ``<device name> <its description>``.
    """
    ct = t.table("channels")
    described: set[int] = set()
    if ct is not None:
        for key in ct.data:
            if not key.isdigit() or key.startswith("0"):
                ct.fail(key, "channel numbers are 1, 2, ... (the terminal numbers DI1, DI2 "
                             "printed on the module)")
            n = int(key)
            if n not in profile.channel_numbers:
                ct.fail(key, f"{profile.key} has no channel {n}; channels: "
                             f"{_shown(profile.channel_numbers)}")
            ch = _channel(ct, key, profile, n)
            try:
                profile = profile.with_channels({n: ch})
            except ChannelError as exc:
                ct.fail(key, str(exc))
            if ch.description is not None:
                described.add(n)
        ct.finish()
    if profile.bank is not None and not profile.bit_points and not profile.points:
        t.fail("channels", f"{profile.key} reads nothing until its channels are assigned, e.g. "
                           f'channels.1 = "valve:3F riser supply valve"; meanings: '
                           f"{_MEANINGS_HINT}")
    if not profile.bit_points:
        return profile
    points = tuple(
        b if b.channel in described and b.channel is not None
        else dataclasses.replace(b, description=_cut(f"{device_name} {b.description or b.name}"))
        for b in profile.bit_points)
    # channel order, whatever order the file gave them in (stable for those without one)
    points = tuple(sorted(points, key=lambda b: (b.channel is None, b.channel or 0)))
    return dataclasses.replace(profile, bit_points=points)


def _shown(numbers: tuple[int, ...]) -> str:
    if not numbers:
        return "none"
    if list(numbers) == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}..{numbers[-1]}" if len(numbers) > 1 else str(numbers[0])
    return ", ".join(str(n) for n in numbers)


def _cut(text: str) -> str:
    return text if len(text) <= _DESCRIPTION_MAX else text[:_DESCRIPTION_MAX - 1] + "…"


# -- custom profiles ---------------------------------------------------------------------------

def parse_contacts(t: Table) -> tuple[tuple[BitPoint, ...], ChannelBank | None, int]:
    """``[[modbus_profiles.<key>.contact]]``, ``channels = {table, first, count}`` and
    ``bit_gap`` of a custom profile (``t``: the profile table)."""
    points = tuple(_contact(c) for c in t.tables("contact"))
    bank: ChannelBank | None = None
    bt = t.table("channels")
    if bt is not None:
        table = bt.choice("table", BitTable, BitTable.DISCRETE_INPUT)
        count = bt.integer("count", min=1, max=2000)
        first = bt.integer("first", 0, min=0, max=0x10000 - count)
        bt.finish()
        bank = ChannelBank(table, first, count)
    bit_gap = t.integer("bit_gap", 0, min=0, max=1999)
    return points, bank, bit_gap


def _contact(t: Table) -> BitPoint:
    name = t.text("name", pattern=_FIELD, hint=_FIELD_HINT)
    meaning = _meaning(t, "meaning", t.text("meaning", max_len=32))
    tables = [*(b.value for b in BitTable), *(r.value for r in RegisterType)]
    where = t.one_of("table", tables)
    table: BitTable | RegisterType = (BitTable(where) if where in {b.value for b in BitTable}
                                      else RegisterType(where))
    address = t.integer("address", min=0, max=0xFFFF)
    if isinstance(table, RegisterType):
        bit: int | None = t.integer("bit", min=0, max=15)
    else:
        if t.has("bit"):
            t.fail("bit", f"only for a contact in a holding or input register; a {where} has "
                          f"one address per contact")
        bit = None
    invert = t.flag("invert", False)
    normal = _normal(t, "normal", meaning)
    channel = t.opt_integer("channel", min=1, max=0xFFFF)
    description = t.text("description", "", min_len=0, max_len=_DESCRIPTION_MAX)
    t.finish()
    try:
        return BitPoint(name, meaning, table, address, bit, invert, normal, channel, description)
    except ValueError as exc:
        t.fail("normal" if t.has("normal") else "", str(exc))
