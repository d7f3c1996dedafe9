"""The ``[ble]`` table of a scenario file: declared, validated, turned into typed objects.

A scenario file is shared by all simulators; this module reads only its ``[ble]`` table and
ignores the rest. Every problem is collected (not just the first) and each message names the
key, the offending value and what is allowed, ESPHome style::

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

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from simulators.ble import bthome
from simulators.ble.sensors import (
    ACTIONS,
    FIELDS,
    Action,
    Event,
    Field,
    SensorConfig,
    SensorKind,
    value_range,
)

SENSOR_KEYS = ("address", "kind", "name", "interval", "battery", "rssi", "key", "value",
               "humidity")
EVENT_KEYS = ("at", "sensor", "action", "field", "value")
BLE_KEYS = ("adapter", "sensors", "events")
DEFAULT_INTERVAL = 5.0
MIN_INTERVAL = 0.02
_MAC = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
_ADAPTER = re.compile(r"^hci[0-9]$")  # dbusmock's AddAdapter derives its address from the digit
_E = TypeVar("_E", SensorKind, Action, Field)


class ScenarioError(ValueError):
    """The ``[ble]`` table is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid BLE scenario:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class Scenario:
    """The validated ``[ble]`` table."""

    sensors: tuple[SensorConfig, ...]
    events: tuple[Event, ...] = ()
    adapter: str = "hci0"


def _allowed(values: Any) -> str:
    return ", ".join(sorted(str(v) for v in values))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def default_name(kind: SensorKind, address: str) -> str:
    return f"{kind}-{address[-5:].replace(':', '')}"


class _Checker:
    """Collects problems while converting raw TOML values."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def unknown_keys(self, where: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                self.fail(f"{where}.{key}", f"unknown key; allowed keys: {', '.join(allowed)}")

    def number(self, where: str, table: Mapping[str, Any], key: str, default: float | None,
               bounds: tuple[float, float]) -> float | None:
        low, high = bounds
        if key not in table:
            return default
        value = table[key]
        if not _number(value):
            self.fail(f"{where}.{key}", f"{value!r} is not a number")
            return default
        if not low <= value <= high:
            self.fail(f"{where}.{key}",
                      f"{value!r} is outside the allowed range {low:g} .. {high:g}")
            return default
        return float(value)

    def choice(self, where: str, value: Any, enum: type[_E], allowed: Any = None,
               context: str = "") -> _E | None:
        allowed = allowed if allowed is not None else list(enum)
        if value not in {str(a) for a in allowed}:
            self.fail(where, f"{value!r} is not allowed{context}; "
                             f"allowed values: {_allowed(allowed)}")
            return None
        return enum(value)


def parse_address(value: Any) -> str | None:
    """Upper-cased MAC address, or None if ``value`` is not one."""
    if not isinstance(value, str) or not _MAC.match(value.upper()):
        return None
    return value.upper()


def _sensor(check: _Checker, where: str, raw: Any) -> SensorConfig | None:
    if not isinstance(raw, dict):
        check.fail(where, "must be a table ([[ble.sensors]])")
        return None
    check.unknown_keys(where, raw, SENSOR_KEYS)
    address = parse_address(raw.get("address"))
    if "address" not in raw:
        check.fail(f"{where}.address", 'required, a MAC address like "A4:C1:38:00:00:01"')
    elif address is None:
        check.fail(f"{where}.address",
                   f'{raw["address"]!r} is not a MAC address like "A4:C1:38:00:00:01"')
    kind: SensorKind | None = None
    if "kind" in raw:
        kind = check.choice(f"{where}.kind", raw["kind"], SensorKind)
    else:
        check.fail(f"{where}.kind", f"required; allowed values: {_allowed(SensorKind)}")
    interval = check.number(where, raw, "interval", DEFAULT_INTERVAL, (MIN_INTERVAL, 3600.0))
    battery = check.number(where, raw, "battery", 100.0,
                           value_range(SensorKind.DOOR, Field.BATTERY))
    rssi = check.number(where, raw, "rssi", -60.0, value_range(SensorKind.DOOR, Field.RSSI))
    humidity = check.number(where, raw, "humidity", 45.0,
                            value_range(SensorKind.TEMPERATURE, Field.HUMIDITY))
    value: float | None = None
    if "value" in raw and kind is not None:
        if Field.VALUE not in FIELDS[kind]:
            check.fail(f"{where}.value", f"a {kind} sensor has no value; allowed for: "
                       f"{_allowed(k for k in SensorKind if Field.VALUE in FIELDS[k])}")
        else:
            value = check.number(where, raw, "value", None, value_range(kind, Field.VALUE))
    key: bytes | None = None
    if "key" in raw:
        if isinstance(raw["key"], str):
            try:
                key = bthome.parse_key(raw["key"])
            except bthome.EncodeError as exc:
                check.fail(f"{where}.key", str(exc))
        else:
            check.fail(f"{where}.key", "must be a string of 32 hexadecimal characters")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        check.fail(f"{where}.name", "must be a non-empty string")
        name = None
    if address is None or kind is None:
        return None
    return SensorConfig(
        address=address, kind=kind, name=name or default_name(kind, address),
        interval=interval or DEFAULT_INTERVAL, battery=battery if battery is not None else 100.0,
        rssi=round(rssi if rssi is not None else -60), key=key, value=value,
        humidity=humidity if humidity is not None else 45.0,
    )


def _event(check: _Checker, where: str, raw: Any,
           sensors: Mapping[str, SensorConfig]) -> Event | None:
    if not isinstance(raw, dict):
        check.fail(where, "must be a table ([[ble.events]])")
        return None
    check.unknown_keys(where, raw, EVENT_KEYS)
    at = check.number(where, raw, "at", None, (0.0, float("inf")))
    if "at" not in raw:
        check.fail(f"{where}.at", "required (simulated seconds from the start)")
    ref = raw.get("sensor")
    sensor = sensors.get(ref) if isinstance(ref, str) else None
    if sensor is None and isinstance(ref, str):
        sensor = sensors.get(ref.upper())
    if sensor is None:
        names = sorted({s.name for s in sensors.values()} | {s.address for s in sensors.values()})
        check.fail(f"{where}.sensor", (f"{ref!r} is not a declared sensor; declared: "
                                       f"{', '.join(names) or '(none)'}") if ref is not None
                   else "required (address or name of a declared sensor)")
    if "action" not in raw:
        check.fail(f"{where}.action", f"required; allowed values: {_allowed(Action)}")
        return None
    allowed = ACTIONS[sensor.kind] if sensor is not None else list(Action)
    context = f" for a {sensor.kind} sensor" if sensor is not None else ""
    action = check.choice(f"{where}.action", raw["action"], Action, allowed, context)
    if action is None:
        return None
    which = Field.VALUE
    value: float | None = None
    if action is Action.SET:
        fields = FIELDS[sensor.kind] if sensor is not None else list(Field)
        if "field" in raw:
            chosen = check.choice(f"{where}.field", raw["field"], Field, fields, context)
            if chosen is None:
                return None
            which = chosen
        elif Field.VALUE not in fields:
            check.fail(f"{where}.field", f"required for a {sensor.kind if sensor else ''} sensor; "
                       f"allowed values: {_allowed(fields)}")
            return None
        if "value" not in raw:
            check.fail(f"{where}.value", 'required for action "set"')
            return None
        kind = sensor.kind if sensor is not None else SensorKind.TEMPERATURE
        value = check.number(where, raw, "value", None, value_range(kind, which))
        if value is None:
            return None
    else:
        for extra in ("field", "value"):
            if extra in raw:
                check.fail(f"{where}.{extra}", f'only used with action "set", not {str(action)!r}')
    if sensor is None or at is None:
        return None
    return Event(at=at, address=sensor.address, action=action, value=value, field=which)


def parse_scenario(document: Mapping[str, Any]) -> Scenario:
    """Validate the ``[ble]`` table of an already parsed TOML document."""
    check = _Checker()
    ble = document.get("ble")
    if not isinstance(ble, dict):
        raise ScenarioError(["ble: the scenario has no [ble] table"])
    check.unknown_keys("ble", ble, BLE_KEYS)
    adapter = ble.get("adapter", "hci0")
    if not isinstance(adapter, str) or not _ADAPTER.match(adapter):
        check.fail("ble.adapter", f"{adapter!r} is not allowed; allowed values: hci0 .. hci9")
        adapter = "hci0"
    raw_sensors = ble.get("sensors", [])
    if not isinstance(raw_sensors, list) or not raw_sensors:
        check.fail("ble.sensors", "at least one [[ble.sensors]] table is required")
        raw_sensors = []
    by_ref: dict[str, SensorConfig] = {}
    sensors: list[SensorConfig] = []
    for index, raw in enumerate(raw_sensors):
        where = f"ble.sensors[{index}]"
        sensor = _sensor(check, where, raw)
        if sensor is None:
            continue
        if sensor.address in by_ref:
            check.fail(f"{where}.address", f"{sensor.address} is declared twice")
            continue
        if sensor.name in by_ref:
            check.fail(f"{where}.name", f"{sensor.name!r} is used by another sensor")
            continue
        by_ref[sensor.address] = by_ref[sensor.name] = sensor
        sensors.append(sensor)
    raw_events = ble.get("events", [])
    if not isinstance(raw_events, list):
        check.fail("ble.events", "must be an array of tables ([[ble.events]])")
        raw_events = []
    events = [e for i, raw in enumerate(raw_events)
              if (e := _event(check, f"ble.events[{i}]", raw, by_ref)) is not None]
    if check.problems:
        raise ScenarioError(check.problems)
    return Scenario(sensors=tuple(sensors), events=tuple(events), adapter=adapter)


def load_scenario(path: str | Path) -> Scenario:
    """Read a TOML scenario file and validate its ``[ble]`` table."""
    try:
        with Path(path).open("rb") as f:
            document = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_scenario(document)


def sensor_from_flag(flag: str, *, interval: float = DEFAULT_INTERVAL) -> SensorConfig:
    """``--sensor KIND:ADDRESS`` (e.g. ``door:A4:C1:38:00:00:01``) -> a sensor with defaults."""
    kind, _, rest = flag.partition(":")
    try:
        return parse_scenario(
            {"ble": {"sensors": [{"kind": kind, "address": rest, "interval": interval}]}}
        ).sensors[0]
    except ScenarioError as exc:
        raise ScenarioError([p.replace("ble.sensors[0].", f"--sensor {flag!r}: ")
                             for p in exc.problems]) from None
