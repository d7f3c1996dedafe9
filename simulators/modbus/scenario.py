"""Scenario files for the Modbus simulator: the ``[modbus]`` table of a TOML file, validated.

A scenario file may hold other simulators' sections too; only ``[modbus]`` is read here. Every
error is a :class:`ScenarioError` naming the offending key (``modbus.events[2].action``) and, where
there is a fixed set, the allowed values. Nothing is opened or started while validating.

Example::

    [modbus]
    seed = 7          # noise random seed (default: random)
    noise = 1.0       # noise scale, 0 = exact values

    [[modbus.devices]]
    id = 1
    profile = "pressure-a"
    name = "hydrant-3F"
    initial = 0.35    # primary point, canonical unit (MPa); or a table {point = value}

    [[modbus.events]]
    at = 5.0
    device = 1
    action = "hydrant_open"
    to = 0.05
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.registers import PROFILES, DeviceProfile, Quantity

from .model import ACTIONS, EXCEPTION_CODES, Action, BusModel, Clock, DeviceModel, Event

SECTION = "modbus"
TOP_KEYS = ("devices", "events", "noise", "seed")
DEVICE_KEYS = ("id", "profile", "name", "initial")
EVENT_KEYS = ("at", "device", "action")
ALL_PARAMS = sorted({name for spec in ACTIONS.values() for name in spec.params})
MAX_DEVICE_ID = 247  # Modbus over serial line V1.02 §2.2: individual addresses 1..247


class ScenarioError(ValueError):
    """An invalid scenario: ``key`` is the dotted path of the offending entry."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key, self.message, self.source = key, message, source
        super().__init__(f"{source + ': ' if source else ''}{key}: {message}")

    def within(self, source: str) -> ScenarioError:
        """The same error, prefixed with the file it came from."""
        return ScenarioError(self.key, self.message, source)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device on the simulated bus. ``initial`` is per point, canonical units."""

    id: int
    profile: DeviceProfile
    name: str = ""
    initial: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    """Devices plus timeline; :meth:`build` turns it into a running :class:`BusModel`."""

    devices: tuple[DeviceSpec, ...]
    events: tuple[Event, ...] = ()
    noise: float = 1.0
    seed: int | None = None

    def build(self, clock: Clock | None = None) -> BusModel:
        """The bus model, with a per-device noise generator derived from ``seed``."""
        models = [DeviceModel(d.id, d.profile, d.name, d.initial, noise=self.noise,
                              seed=None if self.seed is None else self.seed * 1000 + d.id)
                  for d in self.devices]
        return BusModel(models, self.events, clock)

    def with_devices(self, extra: Sequence[DeviceSpec]) -> Scenario:
        """This scenario plus ``extra`` devices; an extra device replaces one with its id."""
        ids = {d.id for d in extra}
        devices = tuple(d for d in self.devices if d.id not in ids) + tuple(extra)
        return Scenario(tuple(sorted(devices, key=lambda d: d.id)), self.events, self.noise,
                        self.seed)


def default_devices() -> tuple[DeviceSpec, ...]:
    """One device per built-in profile, ids 1.., used when nothing else is given."""
    return tuple(DeviceSpec(i, p, f"{p.key}-{i}") for i, p in enumerate(PROFILES.values(), 1))


# --- small validators (each names the key it checks) ----------------------------------------

def _allowed(values: Sequence[str]) -> str:
    return ", ".join(values)


def _check_keys(table: Mapping[str, Any], key: str, allowed: Sequence[str]) -> None:
    for k in table:
        if k not in allowed:
            raise ScenarioError(f"{key}.{k}", f"unknown key; allowed: {_allowed(allowed)}")


def _table(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(key, f"expected a table, got {type(value).__name__}")
    return value


def _integer(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScenarioError(key, f"expected an integer {low}..{high}, got {value!r}")
    return value


def _number(value: Any, key: str, *, positive: bool = False, minimum: float | None = None
            ) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(key, f"expected a number, got {value!r}")
    if positive and not value > 0:
        raise ScenarioError(key, f"must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ScenarioError(key, f"must be >= {minimum:g}, got {value!r}")
    return float(value)


def _choice(value: Any, key: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ScenarioError(key, f"{value!r} is not one of: {_allowed(allowed)}")
    return value


def _profile(value: Any, key: str) -> DeviceProfile:
    return PROFILES[_choice(value, key, sorted(PROFILES))]


def _initial(value: Any, key: str, profile: DeviceProfile) -> dict[str, float]:
    if not isinstance(value, dict):
        return {profile.primary.name: _number(value, key)}
    names = [p.name for p in profile.points]
    _check_keys(value, key, names)
    return {k: _number(v, f"{key}.{k}") for k, v in value.items()}


# --- sections --------------------------------------------------------------------------------

def _device(raw: Any, key: str) -> DeviceSpec:
    table = _table(raw, key)
    _check_keys(table, key, DEVICE_KEYS)
    for required in ("id", "profile"):
        if required not in table:
            raise ScenarioError(f"{key}.{required}", "missing")
    dev_id = _integer(table["id"], f"{key}.id", 1, MAX_DEVICE_ID)
    profile = _profile(table["profile"], f"{key}.profile")
    name = table.get("name", f"{profile.key}-{dev_id}")
    if not isinstance(name, str):
        raise ScenarioError(f"{key}.name", f"expected a string, got {name!r}")
    initial = _initial(table["initial"], f"{key}.initial", profile) if "initial" in table else {}
    return DeviceSpec(dev_id, profile, name, initial)


def _event(raw: Any, key: str, devices: Mapping[int, DeviceSpec]) -> Event:
    table = _table(raw, key)
    for required in EVENT_KEYS:
        if required not in table:
            raise ScenarioError(f"{key}.{required}", "missing")
    at = _number(table["at"], f"{key}.at", minimum=0.0)
    dev_id = _integer(table["device"], f"{key}.device", 1, MAX_DEVICE_ID)
    if dev_id not in devices:
        raise ScenarioError(f"{key}.device", f"no device {dev_id}; defined: "
                            f"{', '.join(str(i) for i in sorted(devices)) or 'none'}")
    action = Action(_choice(table["action"], f"{key}.action", [a.value for a in Action]))
    spec, profile = ACTIONS[action], devices[dev_id].profile
    if spec.quantity is not None and not profile.points_of(spec.quantity):
        raise ScenarioError(f"{key}.action", f"{action} needs a device measuring "
                            f"{spec.quantity}; device {dev_id} is a {profile.key}")
    for k in table:
        if k not in EVENT_KEYS and k not in spec.params:
            what = "not a parameter of" if k in ALL_PARAMS else "unknown key for"
            raise ScenarioError(f"{key}.{k}", f"{what} {action}; allowed: "
                                f"{_allowed([*EVENT_KEYS, *spec.params])}")
    params: dict[str, float | str] = {}
    for name in spec.params:
        pkey = f"{key}.{name}"
        if name not in table:
            if name in spec.required:
                raise ScenarioError(pkey, f"missing; {action} needs it")
            continue
        v = table[name]
        if name == "point":
            params[name] = _choice(v, pkey, _point_names(profile, spec.quantity))
        elif name == "code":
            params[name] = _choice_int(v, pkey, EXCEPTION_CODES)
        else:
            params[name] = _number(v, pkey, positive=name in ("rate", "tau"))
    return Event(at, dev_id, action, params)


def _point_names(profile: DeviceProfile, quantity: Quantity | None) -> list[str]:
    points = profile.points if quantity is None else profile.points_of(quantity)
    return [p.name for p in points]


def _choice_int(value: Any, key: str, allowed: Sequence[int]) -> int:
    if isinstance(value, bool) or value not in allowed:
        raise ScenarioError(key, f"{value!r} is not one of: "
                            f"{', '.join(str(a) for a in allowed)}")
    return int(value)


def parse_scenario(document: Mapping[str, Any]) -> Scenario:
    """Validate the ``[modbus]`` table of a parsed TOML document (other tables are ignored)."""
    if SECTION not in document:
        raise ScenarioError(SECTION, "no [modbus] table in this file")
    top = _table(document[SECTION], SECTION)
    _check_keys(top, SECTION, TOP_KEYS)
    noise = _number(top.get("noise", 1.0), f"{SECTION}.noise", minimum=0.0)
    seed = _integer(top["seed"], f"{SECTION}.seed", 0, 2**31 - 1) if "seed" in top else None
    raw_devices = top.get("devices", [])
    if not isinstance(raw_devices, list):
        raise ScenarioError(f"{SECTION}.devices", "expected an array of tables [[modbus.devices]]")
    devices: dict[int, DeviceSpec] = {}
    first_key: dict[int, str] = {}
    for i, raw in enumerate(raw_devices):
        key = f"{SECTION}.devices[{i}]"
        d = _device(raw, key)
        if d.id in devices:
            raise ScenarioError(f"{key}.id", f"device {d.id} is already defined in "
                                f"{first_key[d.id]}")
        devices[d.id], first_key[d.id] = d, key
    raw_events = top.get("events", [])
    if not isinstance(raw_events, list):
        raise ScenarioError(f"{SECTION}.events", "expected an array of tables [[modbus.events]]")
    events = tuple(_event(raw, f"{SECTION}.events[{i}]", devices)
                   for i, raw in enumerate(raw_events))
    return Scenario(tuple(sorted(devices.values(), key=lambda d: d.id)), events, noise, seed)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate the ``[modbus]`` table of the TOML file at ``path``."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("toml", str(exc), source) from None
    except OSError as exc:
        raise ScenarioError("file", exc.strerror or str(exc), source) from None
    try:
        return parse_scenario(document)
    except ScenarioError as exc:
        raise exc.within(source) from None


def parse_device_option(text: str) -> DeviceSpec:
    """Parse the CLI form ``ID:PROFILE[=INITIAL]``, e.g. ``1:pressure-a=0.35``."""
    key = f"--device {text}"
    spec, _, initial = text.partition("=")
    dev_id, sep, profile_key = spec.partition(":")
    if not sep:
        raise ScenarioError(key, "expected ID:PROFILE[=INITIAL], e.g. 1:pressure-a=0.35")
    number = _integer(int(dev_id) if dev_id.isdigit() else dev_id, f"{key}: ID", 1,
                      MAX_DEVICE_ID)
    profile = _profile(profile_key, f"{key}: PROFILE")
    values: dict[str, float] = {}
    if initial:
        try:
            values[profile.primary.name] = float(initial)
        except ValueError:
            raise ScenarioError(f"{key}: INITIAL", f"expected a number, got {initial!r}"
                                ) from None
    return DeviceSpec(number, profile, f"{profile.key}-{number}", values)
