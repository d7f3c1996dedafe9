"""The ``[[modbus]]`` buses and ``[modbus_profiles.*]`` register maps of the gateway config.

Each ``[[modbus]]`` table is one bus with one master (the gateway): a Modbus RTU serial line
(``port``) or a Modbus TCP gateway (``host``), with the devices hanging on it
(``[[modbus.device]]``). A device names its register map by profile key: one of the built-in
maps of :mod:`protocols.registers` or a custom one declared under ``[modbus_profiles.<key>]``.
Contacts (coils, discrete inputs, register bits: valves, pumps, fans) are configured per
channel (``channels.<n>``) by :mod:`edge.config.modbus_contacts`. Nothing here opens a port:
``firegate check-config`` runs exactly this code.

Typical use by the composition root::

    profiles = parse_modbus_profiles(root)                       # [modbus_profiles.*]
    buses = parse_modbus_buses(root.tables("modbus"), profiles)  # every [[modbus]]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.config import Table
from edge.config.modbus_contacts import (
    DEBOUNCE_MS,
    REPORT_INTERVAL_S,
    parse_channels,
    parse_contacts,
)
from protocols.registers import (
    CANONICAL_UNIT,
    PROFILES,
    DataType,
    DeviceProfile,
    PointSpec,
    RegisterType,
    StatusWord,
    Unit,
    WordOrder,
    convert,
)
from protocols.wire import Quantity

__all__ = [
    "ModbusBusConfig",
    "ModbusDeviceConfig",
    "min_gap_ms",
    "parse_modbus",
    "parse_modbus_buses",
    "parse_modbus_profiles",
]

_BUS_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
_BUS_HINT = "1-32 letters, digits, '_', '.' or '-' (it is part of source ids)"
_KEY = r"[a-z0-9][a-z0-9_-]{0,31}"
_KEY_HINT = "1-32 lower-case letters, digits, '_' or '-'"
_FIELD = r"[a-z][a-z0-9_]{0,31}"
_FIELD_HINT = "1-32 lower-case letters, digits or '_', starting with a letter"
_DESCRIPTION_MAX = 64  # protocols.wire Source.description limit: the device name goes there
_SERIAL_KEYS = ("baud", "parity", "bytesize", "stopbits")


@dataclass(frozen=True, slots=True)
class ModbusDeviceConfig:
    """One device (``[[modbus.device]]``) on a bus."""

    unit: int
    """Modbus device address 1..247 (Modbus over Serial Line V1.02 §2.2)."""
    name: str
    """Human name, the ``description`` of its records (default ``<profile>-<unit>``)."""
    profile: DeviceProfile
    """Register map, with the per-point range overrides (``range.<point>``) applied."""
    interval_s: float = 5.0
    """Seconds between polls while the device answers."""
    offline_after: int = 3
    """Consecutive unanswered polls before ``sensor_offline`` is raised."""
    backoff_max_s: float = 300.0
    """Longest pause between polls of an offline device (its polls back off exponentially)."""
    debounce_ms: float = DEBOUNCE_MS
    """A contact change is reported once it held this long (docs/modbus-contacts.md)."""
    report_interval_s: float = REPORT_INTERVAL_S
    """Each contact's state is sent at least this often (proof of life)."""


@dataclass(frozen=True, slots=True)
class ModbusBusConfig:
    """One bus (``[[modbus]]``): exactly one of ``port`` (RTU) or ``host`` (TCP) is set."""

    name: str
    """Bus name: the driver is ``modbus/<name>``, sources ``modbus/<name>/<unit>/<point>``."""
    devices: tuple[ModbusDeviceConfig, ...]
    port: str | None = None
    """Serial device of a Modbus RTU line, e.g. ``/dev/ttyUSB0``."""
    baud: int = 9600
    parity: str = "N"
    """``N``, ``E`` or ``O``."""
    bytesize: int = 8
    stopbits: int = 1
    host: str | None = None
    """Modbus TCP server or RTU-to-TCP gateway."""
    tcp_port: int = 502
    timeout_s: float = 0.5
    """How long to wait for an answer to one request."""
    retries: int = 0
    """Extra attempts per request; 0: the next poll is the retry (one master, quick give-up)."""
    gap_ms: float = 20.0
    """Quiet time on the line between an answer (or a timeout) and the next request."""
    reopen_max_s: float = 30.0
    """Longest pause between attempts to (re)open a port or TCP connection that failed."""

    @property
    def is_tcp(self) -> bool:
        """True for Modbus TCP, False for Modbus RTU on a serial line."""
        return self.host is not None

    @property
    def endpoint(self) -> str:
        """Where the bus is, for people: ``/dev/ttyUSB0 9600 8N1`` or ``10.0.0.5:502``."""
        if self.host is not None:
            return f"{self.host}:{self.tcp_port}"
        return f"{self.port} {self.baud} {self.bytesize}{self.parity}{self.stopbits}"


def min_gap_ms(baud: int, parity: str = "N", bytesize: int = 8, stopbits: int = 1) -> float:
    """The shortest legal silence between RTU frames, in ms.

    Modbus over Serial Line V1.02 §2.5.1.1: frames are separated by at least 3.5 character
    times; above 19200 baud a fixed 1.750 ms is recommended. A character is a start bit, the
    data bits, the parity bit if any and the stop bits.
    """
    if baud > 19200:
        return 1.75
    bits = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return 3.5 * bits * 1000.0 / baud


# -- buses -------------------------------------------------------------------------------------

def parse_modbus(t: Table, profiles: Mapping[str, DeviceProfile] | None = None
                 ) -> ModbusBusConfig:
    """One ``[[modbus]]`` table; device profiles resolve against built-ins + ``profiles``."""
    custom = dict(profiles or {})
    name = t.text("name", pattern=_BUS_NAME, hint=_BUS_HINT)
    if t.has("port") and t.has("host"):
        t.fail("host", "give either port (Modbus RTU serial line) or host (Modbus TCP), "
                       "not both")
    if not t.has("port") and not t.has("host"):
        t.fail("port", "is required: give port (Modbus RTU serial line, e.g. /dev/ttyUSB0) "
                       "or host (Modbus TCP)")
    port = t.opt_text("port")
    host = t.opt_text("host", max_len=253)
    if port is not None:
        if t.has("tcp_port"):
            t.fail("tcp_port", "only for Modbus TCP (host); this bus is RTU (port)")
        baud = t.integer("baud", 9600, min=1200, max=921600)
        parity = t.one_of("parity", ("N", "E", "O"), "N")
        bytesize = t.integer("bytesize", 8, min=7, max=8)
        if bytesize != 8:
            t.fail("bytesize", "Modbus RTU uses 8 data bits (Modbus over Serial Line V1.02 "
                               "§2.5.1); 7 is Modbus ASCII, which firegate does not speak")
        stopbits = t.integer("stopbits", 1, min=1, max=2)
        tcp_port = 502
    else:
        for key in _SERIAL_KEYS:
            if t.has(key):
                t.fail(key, "only for Modbus RTU (port); this bus is Modbus TCP (host)")
        baud, parity, bytesize, stopbits = 9600, "N", 8, 1
        tcp_port = t.integer("tcp_port", 502, min=1, max=65535)
    timeout_s = t.number("timeout_s", 0.5, min=0.05, max=10.0)
    retries = t.integer("retries", 0, min=0, max=3)
    gap_ms = t.number("gap_ms", 20.0, min=0.0, max=1000.0)
    if port is not None and gap_ms < (need := min_gap_ms(baud, parity, bytesize, stopbits)):
        t.fail("gap_ms", f"must be at least {need:.2f} ms at {baud} baud (3.5 character "
                         f"times, Modbus over Serial Line V1.02 §2.5.1.1), got {gap_ms:g}")
    reopen_max_s = t.number("reopen_max_s", 30.0, min=0.1, max=3600.0)
    devices = tuple(_device(d, custom) for d in t.tables("device"))
    if not devices:
        t.fail("device", "a bus needs at least one [[modbus.device]]")
    seen: dict[int, int] = {}
    for i, d in enumerate(devices):
        if d.unit in seen:
            t.fail(f"device[{i}].unit", f"unit {d.unit} is already used by "
                                        f"device[{seen[d.unit]}] on this bus")
        seen[d.unit] = i
    t.finish()
    return ModbusBusConfig(name=name, devices=devices, port=port, baud=baud, parity=parity,
                           bytesize=bytesize, stopbits=stopbits, host=host, tcp_port=tcp_port,
                           timeout_s=timeout_s, retries=retries, gap_ms=gap_ms,
                           reopen_max_s=reopen_max_s)


def parse_modbus_buses(tables: Sequence[Table],
                       profiles: Mapping[str, DeviceProfile] | None = None
                       ) -> tuple[ModbusBusConfig, ...]:
    """Every ``[[modbus]]`` table; bus names and ports/hosts must be unique across buses."""
    buses: list[ModbusBusConfig] = []
    names: dict[str, int] = {}
    places: dict[str, int] = {}
    for i, t in enumerate(tables):
        bus = parse_modbus(t, profiles)
        if bus.name in names:
            t.fail("name", f"bus name {bus.name!r} is already used by modbus[{names[bus.name]}]")
        place = bus.endpoint if bus.is_tcp else str(bus.port)
        if place in places:
            key = "host" if bus.is_tcp else "port"
            t.fail(key, f"{place} is already used by modbus[{places[place]}]: one master "
                        f"per bus, so put all its devices in one [[modbus]]")
        names[bus.name], places[place] = i, i
        buses.append(bus)
    return tuple(buses)


def _device(t: Table, custom: Mapping[str, DeviceProfile]) -> ModbusDeviceConfig:
    unit = t.integer("unit", min=1, max=247)  # 0 is broadcast, 248-255 reserved (§2.2)
    key = t.text("profile", max_len=64)
    profile = custom.get(key) or PROFILES.get(key)
    if profile is None:
        t.fail("profile", f"unknown profile {key!r}; built-in: {', '.join(sorted(PROFILES))}; "
                          f"custom: {', '.join(sorted(custom)) or 'none'}")
    name = t.text("name", f"{profile.key}-{unit}", max_len=_DESCRIPTION_MAX)
    interval_s = t.number("interval_s", 5.0, min=0.05, max=86400.0)
    offline_after = t.integer("offline_after", 3, min=1, max=100)
    backoff_max_s = t.number("backoff_max_s", 300.0, min=0.1, max=86400.0)
    if backoff_max_s < interval_s:
        t.fail("backoff_max_s", f"must be at least interval_s ({interval_s:g}), "
                                f"got {backoff_max_s:g}")
    overrides = t.mapping("range")
    if overrides:
        profile = _with_ranges(profile, overrides)
    profile = parse_channels(t, profile, name)
    contacts = bool(profile.bit_points)
    for key in ("debounce_ms", "report_interval_s"):
        if t.has(key) and not contacts:
            t.fail(key, f"only for a device with contacts; {profile.key} has none")
    debounce_ms = t.number("debounce_ms", DEBOUNCE_MS, min=0.0, max=60_000.0)
    report_interval_s = t.number("report_interval_s", REPORT_INTERVAL_S, min=1.0,
                                 max=86_400.0)
    t.finish()
    return ModbusDeviceConfig(unit=unit, name=name, profile=profile, interval_s=interval_s,
                              offline_after=offline_after, backoff_max_s=backoff_max_s,
                              debounce_ms=debounce_ms, report_interval_s=report_interval_s)


def _with_ranges(profile: DeviceProfile, overrides: Mapping[str, Table]) -> DeviceProfile:
    """The profile with ``range.<point> = {min, max}`` applied (in the point's own unit)."""
    points = {p.name: p for p in profile.points}
    for point_name, r in overrides.items():
        if point_name not in points:
            r.fail("", f"{profile.key} has no point {point_name!r}; points: "
                       f"{', '.join(points)}")
        p = points[point_name]
        lo = r.number("min", p.minimum)
        hi = r.number("max", p.maximum)
        if not lo < hi:
            r.fail("max", f"must be greater than min ({lo:g} {p.unit}), got {hi:g}")
        r.finish()
        points[point_name] = dataclasses.replace(p, minimum=lo, maximum=hi)
    return dataclasses.replace(profile, points=tuple(points.values()))


# -- custom profiles ---------------------------------------------------------------------------

def parse_modbus_profiles(t: Table) -> dict[str, DeviceProfile]:
    """Custom register maps from ``[modbus_profiles.<key>]`` of the top-level table ``t``."""
    out: dict[str, DeviceProfile] = {}
    for key, pt in t.mapping("modbus_profiles").items():
        out[key] = _profile(key, pt)
    return out


def _profile(key: str, t: Table) -> DeviceProfile:
    if re.fullmatch(_KEY, key) is None:
        t.fail("", f"profile key must be {_KEY_HINT}, got {key!r}")
    if key in PROFILES:
        t.fail("", f"{key!r} is a built-in profile; give the custom one another key")
    model = t.text("model", key, max_len=128)
    description = t.text("description", "", min_len=0)
    points = tuple(_point(p) for p in t.tables("point"))
    words = tuple(_status(s) for s in t.tables("status"))
    contacts, bank, bit_gap = parse_contacts(t)
    if not points and not contacts and bank is None:
        t.fail("point", "a profile needs at least one [[modbus_profiles.<key>.point]] or "
                        "[[modbus_profiles.<key>.contact]], or channels")
    t.finish()
    try:
        return DeviceProfile(key=key, model=model, description=description, points=points,
                             status_words=words, bit_points=contacts, bank=bank,
                             bit_gap=bit_gap)
    except ValueError as exc:  # duplicate names, overlapping registers or contacts
        named = {c.name for c in contacts}
        about_contact = any(re.search(rf"\b{re.escape(n)}\b", str(exc)) for n in named)
        t.fail("contact" if about_contact else "point", str(exc))


def _point(t: Table) -> PointSpec:
    name = t.text("name", pattern=_FIELD, hint=_FIELD_HINT)
    # the quantities a register can carry, not every one of the wire contract
    quantity = Quantity(t.one_of("quantity", [q.value for q in CANONICAL_UNIT]))
    unit = t.choice("unit", Unit, CANONICAL_UNIT[quantity])
    allowed = _units_of(quantity)
    if unit.value not in allowed:
        t.fail("unit", f"must be a unit of {quantity.value}: "
                       f"{', '.join(repr(a) for a in allowed)}, got {unit.value!r}")
    register = t.choice("register", RegisterType, RegisterType.HOLDING)
    data_type = t.choice("type", DataType, DataType.U16)
    address = t.integer("address", min=0, max=0x10000 - data_type.register_count)
    word_order = t.choice("word_order", WordOrder, WordOrder.BIG)
    scale = t.number("scale", 1.0)
    if scale == 0:
        t.fail("scale", "must not be 0")
    offset = t.number("offset", 0.0)
    lo = t.number("min")
    hi = t.number("max")
    if not lo < hi:
        t.fail("max", f"must be greater than min ({lo:g}), got {hi:g}")
    description = t.text("description", "", min_len=0)
    t.finish()
    return PointSpec(name, quantity, unit, register, address, data_type, minimum=lo,
                     maximum=hi, scale=scale, offset=offset, word_order=word_order,
                     description=description)


def _status(t: Table) -> StatusWord:
    name = t.text("name", pattern=_FIELD, hint=_FIELD_HINT)
    register = t.choice("register", RegisterType, RegisterType.HOLDING)
    address = t.integer("address", min=0, max=0xFFFF)
    bits_t = t.table("bits", required=True)
    assert bits_t is not None
    bits: dict[int, str] = {}
    for number in bits_t.data:
        if not number.isdigit() or not 0 <= int(number) <= 15:
            bits_t.fail(number, "bit numbers must be 0..15 (0 = least significant)")
        bit_name = bits_t.text(number, pattern=_FIELD, hint=_FIELD_HINT)
        if bit_name in bits.values():
            bits_t.fail(number, f"bit name {bit_name!r} is used twice")
        bits[int(number)] = bit_name
    bits_t.finish()
    if not bits:
        t.fail("bits", "name at least one bit, e.g. bits = { 0 = \"sensor_fault\" }")
    description = t.text("description", "", min_len=0)
    t.finish()
    return StatusWord(name, register, address, bits, description)


def _units_of(quantity: Quantity) -> list[str]:
    """The units a point of ``quantity`` may be given in (those convertible to canonical)."""
    out: list[str] = []
    for unit in Unit:
        try:
            convert(1.0, unit, CANONICAL_UNIT[quantity])
        except ValueError:
            continue
        out.append(unit.value)
    return out
