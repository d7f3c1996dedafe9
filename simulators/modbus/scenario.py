"""Scenario files for the Modbus simulator: the ``[modbus]`` table of a TOML file, validated.

A scenario file may hold other simulators' sections too; only ``[modbus]`` is read here, through
:class:`common.config.Table` like the edge agent's config: every error is a
:class:`~common.config.ConfigError` naming the offending key (``modbus.events[2].action``) and,
where there is a fixed set, the allowed values; :func:`load_scenario` adds the file's name.
Nothing is opened or started while validating.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import ConfigError, Table, read_toml
from protocols.registers import PROFILES, DeviceProfile, Meaning, Quantity

from .contacts import MAX_BOUNCE_S, MAX_BOUNCES
from .model import (
    ACTIONS,
    EXCEPTION_CODES,
    Action,
    AutoStart,
    BusModel,
    Clock,
    DeviceModel,
    TimelineEvent,
    contact_names,
    contact_states,
)

SECTION = "modbus"
ALL_PARAMS = sorted({name for spec in ACTIONS.values() for name in spec.params})
MAX_DEVICE_ID = 247  # Modbus over serial line V1.02 §2.2: individual addresses 1..247
_EVENT_KEYS = ("at", "device", "action")


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device on the simulated bus. ``initial`` is per point, canonical units;
    ``contacts`` the state name of each contact that does not start in its normal state."""

    id: int
    profile: DeviceProfile
    name: str = ""
    initial: Mapping[str, float] = field(default_factory=dict)
    contacts: Mapping[str, str] = field(default_factory=dict)
    auto_start: AutoStart | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """Devices plus timeline; :meth:`build` turns it into a running :class:`BusModel`."""

    devices: tuple[DeviceSpec, ...]
    events: tuple[TimelineEvent, ...] = ()
    noise: float = 1.0
    seed: int | None = None

    def build(self, clock: Clock | None = None) -> BusModel:
        """The bus model, with a per-device noise generator derived from ``seed``."""
        models = [DeviceModel(d.id, d.profile, d.name, d.initial, noise=self.noise,
                              seed=None if self.seed is None else self.seed * 1000 + d.id,
                              contacts=d.contacts, auto_start=d.auto_start)
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


# --- sections --------------------------------------------------------------------------------

def _device(t: Table) -> DeviceSpec:
    dev_id = t.integer("id", min=1, max=MAX_DEVICE_ID)
    profile = PROFILES[t.one_of("profile", sorted(PROFILES))]
    name = t.text("name", f"{profile.key}-{dev_id}", min_len=0)
    initial: dict[str, float] = {}
    contacts: dict[str, str] = {}
    given = t.raw("initial", None)
    if isinstance(given, Mapping):  # per point and per contact
        points = t.table("initial")
        assert points is not None
        initial = {p.name: v for p in profile.points
                   if (v := points.opt_number(p.name)) is not None}
        for c in contact_names(profile):  # every name counts as allowed in the error
            if points.raw(c, None) is not None:
                contacts[c] = points.one_of(c, contact_states(profile, c))
        points.finish()
    elif given is not None:  # the primary point
        if not profile.points:
            t.fail("initial", f"a {profile.key} measures nothing; give its contacts' states "
                              f"as a table, e.g. {{ {contact_names(profile)[0]} = "
                              f"\"{contact_states(profile, contact_names(profile)[0])[0]}\" }}")
        initial = {profile.primary.name: t.number("initial")}
    auto = t.table("auto_start")
    auto_start = None
    if auto is not None:
        if not any(b.meaning is Meaning.RUN for b in profile.bit_points):
            t.fail("auto_start", f"needs a pump controller (a device with a run contact); "
                                 f"a {profile.key} has none")
        auto_start = AutoStart(auto.integer("device", dev_id, min=1, max=MAX_DEVICE_ID),
                               auto.number("below", min=0), auto.opt_text("point"))
        auto.finish()
    t.finish()
    return DeviceSpec(dev_id, profile, name, initial, contacts, auto_start)


def _check_auto_start(t: Table, d: DeviceSpec, devices: Mapping[int, DeviceSpec]) -> None:
    """The pressure switch of ``d`` watches a pressure point of a defined device."""
    link = d.auto_start
    if link is None:
        return
    auto = t.table("auto_start")
    assert auto is not None
    if link.source not in devices:
        auto.fail("device", f"no device {link.source}; defined: "
                            f"{', '.join(str(i) for i in sorted(devices))}")
    names = _point_names(devices[link.source].profile, Quantity.PRESSURE)
    if not names:
        auto.fail("device", f"device {link.source} measures no pressure "
                            f"(a {devices[link.source].profile.key})")
    if link.point is not None and link.point not in names:
        auto.fail("point", f"must be one of {', '.join(map(repr, names))}, got {link.point!r}")


def _event(t: Table, devices: Mapping[int, DeviceSpec]) -> TimelineEvent:
    at = t.number("at", min=0)
    dev_id = t.integer("device", min=1, max=MAX_DEVICE_ID)
    if dev_id not in devices:
        t.fail("device", f"no device {dev_id}; defined: "
                         f"{', '.join(str(i) for i in sorted(devices)) or 'none'}")
    action = Action(t.one_of("action", [a.value for a in Action]))
    spec, profile = ACTIONS[action], devices[dev_id].profile
    why = spec.unfit(action, profile, dev_id)
    if why is not None:
        t.fail("action", why)
    allowed = (*_EVENT_KEYS, *spec.params)
    for k in t.data:  # checked here, as the keys allowed depend on the action
        if k not in allowed:
            what = "not a parameter of" if k in ALL_PARAMS else "unknown key for"
            t.fail(k, f"{what} {action}; allowed here: {', '.join(allowed)}")
    params: dict[str, float | str] = {}
    for name in spec.params:
        if not t.has(name):
            if name in spec.required:
                t.fail(name, f"is required for {action}")
            continue
        if name == "point" and spec.meaning is not None:
            params[name] = t.one_of(name, [b.name for b in profile.bit_points
                                           if b.meaning is spec.meaning])
        elif name == "point" and action is Action.CONTACT:
            params[name] = t.one_of(name, contact_names(profile))
        elif name == "point":
            params[name] = t.one_of(name, _point_names(profile, spec.quantity))
        elif name == "state":  # after point (the parameters' order): its states
            params[name] = t.one_of(name, contact_states(profile, str(params["point"])))
        elif name == "bounce":
            params[name] = t.integer(name, min=0, max=MAX_BOUNCES)
        elif name == "bounce_s":
            params[name] = t.number(name, above=0, max=MAX_BOUNCE_S)
        elif name == "code":
            code = t.integer(name)
            if code not in EXCEPTION_CODES:
                t.fail(name, f"must be one of {', '.join(map(str, EXCEPTION_CODES))}, "
                             f"got {code}")
            params[name] = code
        elif name in ("rate", "tau"):
            params[name] = t.number(name, above=0)
        else:
            params[name] = t.number(name)
    return TimelineEvent(at, dev_id, action, params)


def _point_names(profile: DeviceProfile, quantity: Quantity | None) -> list[str]:
    points = profile.points if quantity is None else profile.points_of(quantity)
    return [p.name for p in points]


def parse_scenario(document: Mapping[str, Any]) -> Scenario:
    """Validate the ``[modbus]`` table of a parsed TOML document (other tables are ignored)."""
    doc = Table(document)
    if not doc.has(SECTION):
        doc.fail(SECTION, "no [modbus] table in this file")
    top = doc.table(SECTION, required=True)
    assert top is not None
    noise = top.number("noise", 1.0, min=0)
    seed = top.opt_integer("seed", min=0, max=2**31 - 1)
    devices: dict[int, DeviceSpec] = {}
    first_key: dict[int, str] = {}
    tables = top.tables("devices")
    for t in tables:
        d = _device(t)
        if d.id in devices:
            t.fail("id", f"device {d.id} is already defined in {first_key[d.id]}")
        devices[d.id], first_key[d.id] = d, t.path
    for t in tables:
        _check_auto_start(t, devices[t.integer("id")], devices)
    events = tuple(_event(t, devices) for t in top.tables("events"))
    top.finish()
    return Scenario(tuple(sorted(devices.values(), key=lambda d: d.id)), events, noise, seed)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate the ``[modbus]`` table of the TOML file at ``path``."""
    document = read_toml(Path(path))  # its errors name the file already
    try:
        return parse_scenario(document)
    except ConfigError as exc:
        raise exc.within(path) from None


def parse_device_option(text: str) -> DeviceSpec:
    """Parse the CLI form ``ID:PROFILE[=INITIAL]``, e.g. ``1:pressure-a=0.35``; errors are named
    ``--device TEXT: PART``."""
    key = f"--device {text}"
    spec, _, initial = text.partition("=")
    dev_id, sep, profile_key = spec.partition(":")
    if not sep:
        raise ConfigError(key, "must be ID:PROFILE[=INITIAL], e.g. 1:pressure-a=0.35")
    if not dev_id.isdigit():
        raise ConfigError(f"{key}: ID", f"must be an integer 1-{MAX_DEVICE_ID}, got {dev_id!r}")
    parts = Table({"ID": int(dev_id), "PROFILE": profile_key})
    try:
        number = parts.integer("ID", min=1, max=MAX_DEVICE_ID)
        profile = PROFILES[parts.one_of("PROFILE", sorted(PROFILES))]
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc.key}", exc.message) from None
    values: dict[str, float] = {}
    if initial and not profile.points:
        raise ConfigError(f"{key}: INITIAL", f"a {profile.key} measures nothing (contacts only)")
    if initial:
        try:
            values[profile.primary.name] = float(initial)
        except ValueError:
            raise ConfigError(f"{key}: INITIAL", f"must be a number, got {initial!r}") from None
    return DeviceSpec(number, profile, f"{profile.key}-{number}", values)
