"""Scenario files for the panel simulator: the ``[panel]`` table of a TOML file, validated.

A scenario file may hold other simulators' tables too; only ``[panel]`` is read here. It is read
through :class:`common.config.Table`, like the edge agent's config: every error is a
:class:`~common.config.ConfigError` naming the offending key (``panel.events[2].action``) and,
where there is a fixed set, the allowed values; :func:`load_scenario` adds the file's name.
Nothing is opened or started while validating. The timeline's vocabulary and events are in
:mod:`.timeline`. The commented example is ``simulators/panel/sample.toml``;
``docs/simulators.md`` lists every key.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from common.config import ConfigError, Table, read_toml
from protocols.gb26875 import (
    ANALOG_TYPES,
    PROFILES,
    STANDARD,
    SYSTEM_TYPES,
    ComponentAddress,
    Profile,
)
from protocols.gb26875.fields import DESCRIPTION_LEN, TEXT_ENCODING

from .faults import FaultSettings
from .model import ComponentSpec, SystemSpec, UitdSpec
from .timeline import (
    ACTIONS,
    NEVER,
    TimelineEvent,
    analog_value,
    component_by_ref,
    parse_event,
    seconds_or_never,
)

__all__ = ["ACTIONS", "DEFAULT_COMPONENTS", "NEVER", "SECTION", "PanelSpec", "build_event",
           "load_scenario", "parse_event_option", "parse_scenario"]

SECTION = "panel"
MAX_ADDRESS = (1 << 48) - 1
_RATES = ("garbage", "split", "bad_checksum", "duplicate_frame", "withhold_confirm",
          "duplicate_confirm")


@dataclass(frozen=True, slots=True)
class PanelSpec:
    """Everything a simulated UITD needs; :func:`load_scenario` builds it from TOML."""

    profile: Profile = STANDARD
    baud: int = 9600
    uitd_address: int = 0x0379  # the reference examples' UITD, 79 03 00 00 00 00
    centre_address: int = 0
    confirm_timeout: float = 10.0  # §6.5.4: should not exceed 10 s
    retries: int = 3  # §6.5.5
    periodic_interval: float = 0.0  # type 21 + type 1 every N s; 0 = off
    keepalive_interval: float = 30.0  # dahua / handshake profiles, when idle
    check_post_answer: float = 10.0  # seconds until the operator answers; NEVER
    start_time: datetime | None = None  # the panel clock at scenario time 0 (default: now)
    normal_bit: bool = True  # set bit 0 (normal) in state words
    systems: tuple[SystemSpec, ...] = ()
    components: tuple[ComponentSpec, ...] = ()
    uitd: UitdSpec = field(default_factory=UitdSpec)
    events: tuple[TimelineEvent, ...] = ()
    faults: FaultSettings = field(default_factory=FaultSettings)

    def with_defaults(self) -> PanelSpec:
        """Built-in components when none are given, and a system for every component."""
        comps = self.components or DEFAULT_COMPONENTS
        systems = list(self.systems)
        known = {s.key for s in systems}
        for c in comps:
            if c.system_key not in known:
                known.add(c.system_key)
                systems.append(SystemSpec(c.system_type, c.system_address,
                                          _system_text(c.system_type, c.system_address)))
        if not systems:
            systems.append(SystemSpec(1, 1, _system_text(1, 1)))
        return replace(self, components=comps, systems=tuple(systems))

    def component_by_ref(self, ref: str | int, key: str = "component") -> str:
        """A component id from an id or a uint32 address (which must be unique)."""
        return component_by_ref(self.components or DEFAULT_COMPONENTS, ref, key)


def _system_text(stype: int, saddr: int) -> str:
    code = SYSTEM_TYPES.get(stype)
    return f"{saddr}号{code.zh}" if code else f"系统 {stype}/{saddr}"


# Used when a scenario names no components: a small building.
DEFAULT_COMPONENTS: tuple[ComponentSpec, ...] = (
    ComponentSpec("smoke-3F-east", 42, ComponentAddress.from_int(3001), "3F 东侧走廊"),
    ComponentSpec("heat-3F-kitchen", 31, ComponentAddress.from_int(3002), "3F 厨房"),
    ComponentSpec("callpoint-3F-stairs", 23, ComponentAddress.from_int(3010), "3F 楼梯间手报"),
    ComponentSpec("module-pump-room", 87, ComponentAddress.from_int(101),
                  "B1 消防泵房 输入输出模块"),
    ComponentSpec("pressure-roof", 99, ComponentAddress.from_int(1), "屋顶 消火栓稳压 压力",
                  11, 1, analog_type=5, value=350.0),
)


def load_scenario(path: str | Path) -> PanelSpec:
    """Read and validate the ``[panel]`` table of a TOML file (absent table: defaults)."""
    data = read_toml(Path(path))  # its errors name the file already
    try:
        return _parse(Table(data).table(SECTION) or Table({}, SECTION))
    except ConfigError as exc:
        raise exc.within(path) from None


# --- values the generic Table does not know ---------------------------------------------------

def _text(t: Table, key: str, default: str, max_bytes: int) -> str:
    """A text of at most ``max_bytes`` in GB 18030, as the frame carries it (e.g. 31 bytes for a
    component description, 图30)."""
    value = t.text(key, default, min_len=0)
    try:
        size = len(value.encode(TEXT_ENCODING))
    except UnicodeEncodeError:
        t.fail(key, f"must be encodable in GB 18030, got {value!r}")
    if size > max_bytes:
        t.fail(key, f"must be at most {max_bytes} bytes in GB 18030 (a Chinese character takes "
                    f"2), got {size}: {value!r}")
    return value


def _version(t: Table, key: str) -> tuple[int, int]:
    """A ``"MAJOR.MINOR"`` software version, each part one byte (图33, 图36)."""
    hint = '"MAJOR.MINOR" (each 0-255)'
    text = t.text(key, "1.0", pattern=r"[0-9]{1,3}\.[0-9]{1,3}", hint=hint)
    major, minor = (int(p) for p in text.split("."))
    if major > 255 or minor > 255:
        t.fail(key, f"must be {hint}, got {text!r}")
    return major, minor


def _start_time(t: Table) -> datetime | None:
    if t.raw("start_time", None) is None:  # (asked for either way: finish() lists it)
        return None
    value = t.date_time("start_time")
    if not 2000 <= value.year <= 2099:  # the 6-byte time label holds a two-digit year
        t.fail("start_time", f"must be in the years 2000-2099 (the time label), got {value}")
    return value.replace(tzinfo=None)


def _unique(t: Table, key: str, values: Sequence[Hashable], what: str) -> None:
    seen: set[Hashable] = set()
    for i, v in enumerate(values):
        if v in seen:
            t.fail(f"{key}[{i}]", f"duplicate {what} {v!r}")
        seen.add(v)


# --- the [panel] table ------------------------------------------------------------------------

def parse_scenario(panel: Mapping[str, Any]) -> PanelSpec:
    """Validate the contents of a ``[panel]`` table."""
    p = Table({SECTION: panel}).table(SECTION, required=True)
    assert p is not None
    return _parse(p)


def _parse(p: Table) -> PanelSpec:
    default = PanelSpec()
    profile = PROFILES[p.one_of("profile", sorted(PROFILES), STANDARD.name)]
    uitd = UitdSpec(_text(p, "uitd_description", UitdSpec().description, 255),
                    _version(p, "uitd_version"),
                    p.integer("uitd_operator", 1, min=0, max=255))
    start = _start_time(p)
    systems = tuple(_system(t) for t in p.tables("systems"))
    _unique(p, "systems", [s.key for s in systems], "system (type, address)")
    comps = tuple(_component(t) for t in p.tables("components"))
    _unique(p, "components", [c.id for c in comps], "component id")
    _unique(p, "components", [c.key for c in comps], "component (system, address)")
    faults_t = p.table("faults")
    cfg = PanelSpec(
        profile=profile,
        baud=p.integer("baud", default.baud, min=1, max=4_000_000),
        uitd_address=p.integer("uitd_address", default.uitd_address, min=0, max=MAX_ADDRESS),
        centre_address=p.integer("centre_address", default.centre_address, min=0,
                                 max=MAX_ADDRESS),
        confirm_timeout=p.number("confirm_timeout", default.confirm_timeout, above=0, max=10),
        retries=p.integer("retries", default.retries, min=0, max=100),
        periodic_interval=p.number("periodic_interval", 0, min=0),
        keepalive_interval=p.number("keepalive_interval", default.keepalive_interval, above=0),
        check_post_answer=seconds_or_never(p, "check_post_answer", default.check_post_answer),
        start_time=start,
        normal_bit=p.flag("normal_bit", True),
        systems=systems, components=comps, uitd=uitd,
        faults=FaultSettings() if faults_t is None else _faults(faults_t))
    full = cfg.with_defaults()
    events = [parse_event(t, full.components) for t in p.tables("events")]
    p.finish()
    known = {s.key for s in full.systems}
    for i, e in enumerate(events):
        if e.system is not None and e.system not in known:
            p.fail(f"events[{i}].system_type", f"no system {e.system[0]}/{e.system[1]}; known: "
                   + ", ".join(f"{a}/{b}" for a, b in sorted(known)))
    return replace(cfg, events=tuple(sorted(events, key=lambda e: e.at)))


def _system(t: Table) -> SystemSpec:
    stype = t.integer("type", 1, min=0, max=255)
    saddr = t.integer("address", 1, min=0, max=255)
    spec = SystemSpec(stype, saddr, _text(t, "description", _system_text(stype, saddr), 255),
                      _version(t, "version"))
    t.finish()
    return spec


def _component(t: Table) -> ComponentSpec:
    ctype = t.integer("type", min=0, max=255)
    addr = t.raw("address")
    if isinstance(addr, list):
        if len(addr) != 2 or not all(isinstance(a, int) and not isinstance(a, bool)
                                     and 0 <= a <= 0xFFFF for a in addr):
            t.fail("address", f"must be [loop, point] (each 0-65535), got {addr!r}")
        address = ComponentAddress.from_loop_point(addr[0], addr[1])
    else:
        address = ComponentAddress.from_int(t.integer("address", min=0, max=0xFFFFFFFF))
    analog_type = t.opt_integer("analog_type", min=0, max=255)
    value = None
    if t.raw("value", None) is not None:
        if analog_type is None:
            t.fail("value", "needs analog_type (表6: " + ", ".join(
                f"{a.value} {a.unit or a.en}" for a in ANALOG_TYPES.values()) + ")")
        value = analog_value(t, "value", analog_type)
    st = t.integer("system_type", 1, min=0, max=255)
    sa = t.integer("system_address", 1, min=0, max=255)
    cid = t.text("id", f"{st}/{sa}/{address.value}")
    description = _text(t, "description", "", DESCRIPTION_LEN)
    t.finish()
    return ComponentSpec(cid, ctype, address, description, st, sa, analog_type, value)


def _faults(t: Table) -> FaultSettings:
    rates = {name: rate for name in _RATES
             if (rate := t.opt_number(name, min=0, max=1)) is not None}
    settings = FaultSettings(
        **rates,
        garbage_bytes=t.integer("garbage_bytes", 16, min=1, max=4096),
        split_parts=t.integer("split_parts", 3, min=2, max=1054),
        split_gap=t.number("split_gap", 0.02, min=0, max=10),
        seed=t.opt_integer("seed", min=0, max=2**63))
    t.finish()
    return settings


# --- events from code and from the command line -----------------------------------------------

def build_event(cfg: PanelSpec, table: Mapping[str, Any], key: str) -> TimelineEvent:
    """Validate one timeline entry (a ``[[panel.events]]`` table) against ``cfg``; errors are
    named ``key.<field>``."""
    return parse_event(Table(table, key), cfg.components or DEFAULT_COMPONENTS)


def parse_event_option(cfg: PanelSpec, action: str, text: str, option: str) -> TimelineEvent:
    """A CLI shortcut such as ``--fire-alarm-at 5`` or ``--fault-at 20:module-pump-room``:
    ``AT[:COMPONENT]`` (default: the first component) for component actions, ``AT`` for the
    others (system actions act on the first system). Errors are named after ``option``."""
    at_text, _, ref = text.partition(":")
    try:
        at = float(at_text)
    except ValueError:
        raise ConfigError(option, f"must be AT[:COMPONENT], got {text!r}") from None
    table: dict[str, Any] = {"at": at, "action": action}
    target = ACTIONS[action].target
    if target in ("component", "restore"):
        comps = cfg.components or DEFAULT_COMPONENTS
        table["component"] = ref or comps[0].id
    elif ref:
        raise ConfigError(option, f"{action} takes no component; must be AT, got {text!r}")
    try:
        return build_event(cfg, table, option)
    except ConfigError as exc:
        raise ConfigError(option, exc.message) from None
