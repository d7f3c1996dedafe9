"""The ``[ble]`` table of a scenario file: declared, validated, turned into typed objects.

A scenario file is shared by all simulators; this module reads only its ``[ble]`` table and
ignores the rest. It is read through :class:`common.config.Table`, like the edge agent's config,
but every problem is collected (not just the first) into one
:class:`~common.config.ConfigErrors`; each names the key, the offending value and what is
allowed, ESPHome style::

    [ble]
    adapter = "hci0"                      # optional, default hci0

    [[ble.sensors]]
    address = "A4:C1:38:00:00:01"         # required, unique
    kind = "door"                         # door | smoke | pressure | temperature | callpoint
    name = "stair-2F"                     # optional, default "<kind>-<last two bytes>"
    interval = 5.0                        # optional, seconds, default 5.0
    battery = 100                         # optional, %
    rssi = -60                            # optional, dBm
    key = "231d39c1d7cc1ab1aee224cd096db932"   # optional bind key: encrypted adverts
    value = 0.35                          # optional: pressure in MPa / temperature in °C
    humidity = 45.0                       # optional, temperature sensors

    [[ble.events]]
    at = 10.0                             # simulated seconds from the start
    sensor = "A4:C1:38:00:00:01"          # address or name of a declared sensor
    action = "open"                       # open | close | smoke | clear | press | set |
                                          # silence | resume (per kind, see ACTIONS)
    field = "value"                       # for "set": value | humidity | battery | rssi
    value = 0.12                          # for "set"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from common.config import ConfigError, ConfigErrors, ErrorCollector, Table, read_toml
from simulators.ble import bthome
from simulators.ble.sensors import (
    ACTIONS,
    FIELDS,
    Action,
    Field,
    SensorConfig,
    SensorKind,
    TimelineEvent,
    value_range,
)

SENSOR_KEYS = ("address", "kind", "name", "interval", "battery", "rssi", "key", "value",
               "humidity")
EVENT_KEYS = ("at", "sensor", "action", "field", "value")
DEFAULT_INTERVAL = 5.0
MIN_INTERVAL = 0.02
_MAC = r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}"
_MAC_HINT = 'a MAC address like "A4:C1:38:00:00:01"'
_ADAPTER = r"hci[0-9]"  # dbusmock's AddAdapter derives its address from the digit


@dataclass(frozen=True, slots=True)
class Scenario:
    """The validated ``[ble]`` table."""

    sensors: tuple[SensorConfig, ...]
    events: tuple[TimelineEvent, ...] = ()
    adapter: str = "hci0"


def default_name(kind: SensorKind, address: str) -> str:
    return f"{kind}-{address[-5:].replace(':', '')}"


def _one_of(t: Table, key: str, allowed: Iterable[StrEnum], context: str = "") -> str:
    """A required value out of ``allowed`` (a subset of an enum, e.g. the actions of a kind)."""
    names = ", ".join(sorted(repr(str(a)) for a in allowed))
    if not t.has(key):
        t.fail(key, f"is required{context}; one of {names}")
    value = t.raw(key)
    if value not in {str(a) for a in allowed}:
        t.fail(key, f"must be one of {names}{context}, got {value!r}")
    assert isinstance(value, str)
    return value


def _fail(problems: ErrorCollector, t: Table, key: str, message: str) -> None:
    problems.attempt(lambda: t.fail(key, message), None)


def _finish(problems: ErrorCollector, t: Table, keys: tuple[str, ...]) -> None:
    # Every allowed key counts as asked for, also those a failed check never reached.
    for key in keys:
        t.raw(key, None)
    problems.attempt(t.finish, None)


# --- [[ble.sensors]] -----------------------------------------------------------------------------

def _sensor_value(t: Table, kind: SensorKind | None) -> float | None:
    if not t.has("value") or kind is None:
        return None
    if Field.VALUE not in FIELDS[kind]:
        with_value = (k for k in SensorKind if Field.VALUE in FIELDS[k])
        t.fail("value", f"a {kind} sensor has no value; allowed for: "
                        f"{', '.join(sorted(with_value))}")
    low, high = value_range(kind, Field.VALUE)
    return t.number("value", min=low, max=high)


def _bind_key(t: Table) -> bytes | None:
    text = t.opt_text("key")
    if text is None:
        return None
    try:
        return bthome.parse_key(text)
    except bthome.EncodeError as exc:
        t.fail("key", str(exc))


def _ranged(problems: ErrorCollector, t: Table, key: str, default: float,
            kind: SensorKind, which: Field) -> float:
    low, high = value_range(kind, which)
    return problems.attempt(lambda: t.number(key, default, min=low, max=high), default)


def _sensor(problems: ErrorCollector, t: Table) -> SensorConfig | None:
    address = problems.attempt(lambda: t.text("address", pattern=_MAC, hint=_MAC_HINT), None)
    kind_name = problems.attempt(lambda: _one_of(t, "kind", SensorKind), None)
    kind = None if kind_name is None else SensorKind(kind_name)
    interval = problems.attempt(
        lambda: t.number("interval", DEFAULT_INTERVAL, min=MIN_INTERVAL, max=3600.0),
        DEFAULT_INTERVAL)
    battery = _ranged(problems, t, "battery", 100.0, SensorKind.DOOR, Field.BATTERY)
    rssi = _ranged(problems, t, "rssi", -60.0, SensorKind.DOOR, Field.RSSI)
    humidity = _ranged(problems, t, "humidity", 45.0, SensorKind.TEMPERATURE, Field.HUMIDITY)
    value = problems.attempt(lambda: _sensor_value(t, kind), None)
    key = problems.attempt(lambda: _bind_key(t), None)
    name = problems.attempt(lambda: t.opt_text("name"), None)
    _finish(problems, t, SENSOR_KEYS)
    if address is None or kind is None:
        return None
    address = address.upper()
    return SensorConfig(address=address, kind=kind, name=name or default_name(kind, address),
                        interval=interval, battery=battery, rssi=round(rssi), key=key,
                        value=value, humidity=humidity)


# --- [[ble.events]] ------------------------------------------------------------------------------

def _sensor_ref(t: Table, sensors: Mapping[str, SensorConfig]) -> SensorConfig:
    ref = t.raw("sensor", None)
    if ref is None:
        t.fail("sensor", "is required (the address or name of a declared sensor)")
    sensor = (sensors.get(ref) or sensors.get(ref.upper())) if isinstance(ref, str) else None
    if sensor is None:
        names = sorted({s.name for s in sensors.values()} | {s.address for s in sensors.values()})
        t.fail("sensor", f"must be the address or name of a declared sensor, got {ref!r}; "
                         f"declared: {', '.join(names) or '(none)'}")
    return sensor


def _set(t: Table, sensor: SensorConfig | None) -> tuple[Field, float]:
    """What ``action = "set"`` changes, and to what."""
    fields = FIELDS[sensor.kind] if sensor is not None else list(Field)
    context = f" for a {sensor.kind} sensor" if sensor is not None else ""
    if t.has("field") or Field.VALUE not in fields:
        which = Field(_one_of(t, "field", fields, context))
    else:
        which = Field.VALUE
    if not t.has("value"):
        t.fail("value", 'is required for action "set"')
    low, high = value_range(sensor.kind if sensor is not None else SensorKind.TEMPERATURE, which)
    return which, t.number("value", min=low, max=high)


def _event(problems: ErrorCollector, t: Table,
           sensors: Mapping[str, SensorConfig]) -> TimelineEvent | None:
    at = problems.attempt(lambda: t.number("at", min=0), None)
    sensor = problems.attempt(lambda: _sensor_ref(t, sensors), None)
    allowed = ACTIONS[sensor.kind] if sensor is not None else list(Action)
    context = f" for a {sensor.kind} sensor" if sensor is not None else ""
    action_name = problems.attempt(lambda: _one_of(t, "action", allowed, context), None)
    action = None if action_name is None else Action(action_name)
    which, value = Field.VALUE, None
    if action is Action.SET:
        which, value = problems.attempt(lambda: _set(t, sensor), (Field.VALUE, None))
    elif action is not None:
        for extra in ("field", "value"):
            if t.has(extra):
                _fail(problems, t, extra, f'only used with action "set", not {str(action)!r}')
    _finish(problems, t, EVENT_KEYS)
    if sensor is None or at is None or action is None or (action is Action.SET
                                                          and value is None):
        return None
    return TimelineEvent(at=at, address=sensor.address, action=action, value=value, field=which)


# --- the [ble] table -----------------------------------------------------------------------------

def parse_scenario(document: Mapping[str, Any]) -> Scenario:
    """Validate the ``[ble]`` table of an already parsed TOML document; every problem found is
    in the :class:`~common.config.ConfigErrors` raised."""
    doc = Table(document)
    if not doc.has("ble"):
        doc.fail("ble", "no [ble] table in this file")
    ble = doc.table("ble", required=True)
    assert ble is not None
    problems = ErrorCollector()
    adapter = problems.attempt(
        lambda: ble.text("adapter", "hci0", pattern=_ADAPTER, hint="hci0 .. hci9"), "hci0")
    sensor_tables = problems.attempt(lambda: ble.tables("sensors"), None)
    if sensor_tables == []:
        _fail(problems, ble, "sensors", "at least one [[ble.sensors]] table is required")
    by_ref: dict[str, SensorConfig] = {}
    sensors: list[SensorConfig] = []
    for t in sensor_tables or []:
        sensor = _sensor(problems, t)
        if sensor is None:
            continue
        if sensor.address in by_ref:
            _fail(problems, t, "address", f"{sensor.address} is declared twice")
        elif sensor.name in by_ref:
            _fail(problems, t, "name", f"{sensor.name!r} is used by another sensor")
        else:
            by_ref[sensor.address] = by_ref[sensor.name] = sensor
            sensors.append(sensor)
    events = [e for t in problems.attempt(lambda: ble.tables("events"), [])
              if (e := _event(problems, t, by_ref)) is not None]
    _finish(problems, ble, ("adapter", "sensors", "events"))
    problems.raise_any()
    return Scenario(sensors=tuple(sensors), events=tuple(events), adapter=adapter)


def load_scenario(path: str | Path) -> Scenario:
    """Read a TOML scenario file and validate its ``[ble]`` table."""
    document = read_toml(Path(path))  # its errors name the file already
    try:
        return parse_scenario(document)
    except ConfigError as exc:
        raise exc.within(path) from None


def sensor_from_flag(flag: str, *, interval: float = DEFAULT_INTERVAL) -> SensorConfig:
    """``--sensor KIND:ADDRESS`` (e.g. ``door:A4:C1:38:00:00:01``) -> a sensor with defaults."""
    kind, _, rest = flag.partition(":")
    try:
        return parse_scenario(
            {"ble": {"sensors": [{"kind": kind, "address": rest, "interval": interval}]}}
        ).sensors[0]
    except ConfigErrors as exc:
        raise ConfigErrors([
            ConfigError(f"--sensor {flag!r}: {e.key.removeprefix('ble.sensors[0].')}", e.message)
            for e in exc.errors]) from None
