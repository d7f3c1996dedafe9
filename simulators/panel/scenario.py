"""Scenario files for the panel simulator: the ``[panel]`` table of a TOML file, validated.

A scenario file may hold other simulators' tables too; only ``[panel]`` is read here. Every error
is a :class:`ScenarioError` naming the offending key (``panel.events[2].action``) and, where there
is a fixed set, the allowed values. Nothing is opened or started while validating. The commented
example is ``simulators/panel/sample.toml``; ``docs/simulators.md`` lists every key.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

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
from .model import (
    COMPONENT_CONDITIONS,
    OPERATIONS,
    ComponentSpec,
    SystemKey,
    SystemSpec,
    UitdSpec,
)

SECTION = "panel"
NEVER = math.inf  # check-post: the operator never answers
MAX_ADDRESS = (1 << 48) - 1

Target = Literal["component", "system", "system_or_uitd", "restore", "none"]


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """What an action acts on and which keys it takes besides ``at`` and ``action``."""

    target: Target
    params: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    help: str = ""


def _component_action(help_: str) -> ActionSpec:
    return ActionSpec("component", help=help_)


def _operation(help_: str) -> ActionSpec:
    return ActionSpec("system", ("operator",), help=help_)


# The timeline's vocabulary. Component conditions map to 图7 bits, operations to 图9 bits.
ACTIONS: Mapping[str, ActionSpec] = {
    "fire_alarm": _component_action("fire alarm (latches until reset); type 2, sent first"),
    "fault": _component_action("component fault; type 2"),
    "supervisory": _component_action("supervisory signal (监管); type 2"),
    "start": _component_action("started/open (启动), e.g. a pump or fan; type 2"),
    "stop": _component_action("clear started and feedback; type 2"),
    "feedback": _component_action("feedback (反馈) from a controlled device; type 2"),
    "delay": _component_action("delay running (延时); type 2"),
    "disable": _component_action("disabled/isolated (屏蔽); type 2"),
    "enable": _component_action("clear disabled; type 2"),
    "power_fault": _component_action("component power fault; type 2"),
    "restore": ActionSpec("restore", ("uitd",),
                          help="clear every condition but a latched fire alarm, of a component, "
                               "a system (power/bus faults) or the UITD (uitd = true)"),
    "analog": ActionSpec("component", ("value", "analog_type"), ("value",),
                         "a measured value; type 3"),
    "silence": _operation("operator silences the panel (消音); type 4"),
    "reset": _operation("operator resets the panel (复位): clears fire alarms, supervisory, "
                        "started and feedback; type 4 then type 1"),
    "acknowledge": _operation("operator acknowledges (确认); type 4"),
    "self_test": _operation("self test (自检); type 4"),
    "manual_alarm": _operation("manual alarm (手动报警); type 4"),
    "alarm_cleared": _operation("alarm cleared (警情消除); type 4"),
    "test": _operation("test (测试); type 4"),
    "mains_fault": ActionSpec("system_or_uitd", ("uitd",),
                              help="mains power fault of a system (type 1) or of the UITD "
                                   "(uitd = true, type 21)"),
    "backup_fault": ActionSpec("system_or_uitd", ("uitd",),
                               help="backup power fault of a system or of the UITD"),
    "bus_fault": ActionSpec("system", help="bus fault of a system; type 1"),
    "state": ActionSpec("none", help="upload the UITD state (type 21) and every system state "
                                     "(type 1) now"),
    "check_post_answer": ActionSpec("none", ("after",), ("after",),
                                    "from now on the operator answers a check-post after "
                                    "`after` seconds, or \"never\""),
    "garbage": ActionSpec("none", ("count", "bytes"),
                          help="random bytes on the line before the next `count` frames"),
    "split": ActionSpec("none", ("count", "parts", "gap"),
                        help="the next `count` frames in `parts` pieces, `gap` s apart"),
    "bad_checksum": ActionSpec("none", ("count",),
                               help="the next `count` upload transmissions (resends "
                                    "count) with a wrong checksum"),
    "duplicate_frame": ActionSpec("none", ("count",),
                                  help="the next `count` upload transmissions written twice"),
    "withhold_confirm": ActionSpec("none", ("count",),
                                   help="leave the next `count` controls/requests unanswered"),
    "duplicate_confirm": ActionSpec("none", ("count",),
                                    help="answer the next `count` controls/requests twice"),
    "link_loss": ActionSpec("none", ("duration",), ("duration",),
                            "stop sending and answering for `duration` s, then come back"),
}
assert set(COMPONENT_CONDITIONS) <= set(ACTIONS) and set(OPERATIONS) <= set(ACTIONS)
_EVENT_BASE = ("at", "action", "component", "system_type", "system_address")


@dataclass(frozen=True, slots=True)
class Event:
    """One timeline entry, validated. Unused fields keep their defaults."""

    at: float
    action: str
    component: str | None = None  # component id
    system: SystemKey | None = None
    uitd: bool = False
    value: float | None = None
    analog_type: int | None = None
    operator: int = 1
    count: int = 1
    bytes: int | None = None
    parts: int | None = None
    gap: float | None = None
    duration: float | None = None
    after: float | None = None  # NEVER for "never"

    def __str__(self) -> str:
        target = (self.component or ("uitd" if self.uitd else "")
                  or (f"system {self.system[0]}/{self.system[1]}" if self.system else ""))
        extra = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in (
            ("value", self.value), ("count", self.count if self.count != 1 else None),
            ("duration", self.duration), ("after", self.after)) if v is not None]
        return " ".join(x for x in (f"t={self.at:g}", self.action, target, *extra) if x)


@dataclass(frozen=True, slots=True)
class PanelConfig:
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
    events: tuple[Event, ...] = ()
    faults: FaultSettings = field(default_factory=FaultSettings)

    def with_defaults(self) -> PanelConfig:
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
        comps = self.components or DEFAULT_COMPONENTS
        if isinstance(ref, str):
            for c in comps:
                if c.id == ref:
                    return c.id
            if ref.isdigit():  # from the command line: an address
                return self.component_by_ref(int(ref), key)
        else:
            found = [c for c in comps if c.address.value == ref]
            if len(found) == 1:
                return found[0].id
        ids = ", ".join(c.id for c in comps)
        raise ScenarioError(key, f"no component {ref!r}; known: {ids}")


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


class ScenarioError(ValueError):
    """An invalid scenario: ``key`` is the dotted path of the offending entry."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key, self.message, self.source = key, message, source
        super().__init__(f"{source + ': ' if source else ''}{key}: {message}")

    def within(self, source: str) -> ScenarioError:
        """The same error, prefixed with the file it came from."""
        return ScenarioError(self.key, self.message, source)


def load_scenario(path: str | Path) -> PanelConfig:
    """Read and validate the ``[panel]`` table of a TOML file (absent table: defaults)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("(file)", f"not valid TOML: {exc}", str(path)) from None
    try:
        return parse_scenario(data.get(SECTION, {}))
    except ScenarioError as exc:
        raise exc.within(str(path)) from None


# --- small validators, each naming the key it checks --------------------------------------

def _check_keys(table: Mapping[str, Any], key: str, allowed: Sequence[str]) -> None:
    for k in table:
        if k not in allowed:
            raise ScenarioError(f"{key}.{k}", f"unknown key; allowed: {', '.join(allowed)}")


def _table(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(key, f"expected a table, got {type(value).__name__}")
    return value


def _list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(key, f"expected an array of tables ([[{key}]]), "
                                 f"got {type(value).__name__}")
    return value


def _integer(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScenarioError(key, f"expected an integer {low}..{high}, got {value!r}")
    return value


def _number(value: Any, key: str, low: float = 0.0, high: float = math.inf, *,
            low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ScenarioError(key, f"expected a number, got {value!r}")
    if value < low or (low_open and value == low) or value > high:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        if high < math.inf:
            bound += f" and <= {high:g}"
        raise ScenarioError(key, f"expected a number {bound}, got {value!r}")
    return float(value)


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(key, f"expected true or false, got {value!r}")
    return value


def _text(value: Any, key: str, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise ScenarioError(key, f"expected a string, got {value!r}")
    try:
        size = len(value.encode(TEXT_ENCODING))
    except UnicodeEncodeError:
        raise ScenarioError(key, f"{value!r} is not encodable in GB 18030") from None
    if size > max_bytes:
        raise ScenarioError(key, f"{value!r} is {size} bytes in GB 18030; at most {max_bytes} "
                                 "(a Chinese character takes 2)")
    return value


def _version(value: Any, key: str) -> tuple[int, int]:
    parts = value.split(".") if isinstance(value, str) else value
    if (isinstance(parts, list) and len(parts) == 2
            and all(str(p).isdigit() and 0 <= int(p) <= 255 for p in parts)):
        return int(parts[0]), int(parts[1])
    raise ScenarioError(key, f"expected \"MAJOR.MINOR\" (each 0..255), got {value!r}")


def _choice(value: Any, key: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ScenarioError(key, f"{value!r} is not one of: {', '.join(allowed)}")
    return value


def _after(value: Any, key: str) -> float:
    if value == "never":
        return NEVER
    if isinstance(value, str):
        raise ScenarioError(key, f"expected seconds >= 0 or \"never\", got {value!r}")
    return _number(value, key)


# --- the [panel] table --------------------------------------------------------------------

TOP_KEYS = ("profile", "baud", "uitd_address", "centre_address", "confirm_timeout", "retries",
            "periodic_interval", "keepalive_interval", "check_post_answer", "start_time",
            "normal_bit", "uitd_description", "uitd_version", "uitd_operator", "systems",
            "components", "events", "faults")
SYSTEM_KEYS = ("type", "address", "description", "version")
COMPONENT_KEYS = ("id", "system_type", "system_address", "type", "address", "description",
                  "analog_type", "value")
FAULT_KEYS = ("seed", "garbage", "split", "bad_checksum", "duplicate_frame", "withhold_confirm",
              "duplicate_confirm", "garbage_bytes", "split_parts", "split_gap")


def parse_scenario(panel: Mapping[str, Any]) -> PanelConfig:
    """Validate the contents of a ``[panel]`` table."""
    p = _table(panel, SECTION)
    _check_keys(p, SECTION, TOP_KEYS)
    k = SECTION + "."
    cfg = PanelConfig()
    profile = STANDARD
    if "profile" in p:
        profile = PROFILES[_choice(p["profile"], k + "profile", sorted(PROFILES))]
    uitd = UitdSpec(
        _text(p.get("uitd_description", UitdSpec().description), k + "uitd_description", 255),
        _version(p.get("uitd_version", "1.0"), k + "uitd_version"),
        _integer(p.get("uitd_operator", 1), k + "uitd_operator", 0, 255))
    start = p.get("start_time")
    if start is not None:
        start = _start_time(start, k + "start_time")
    systems = tuple(_system(_table(s, f"{k}systems[{i}]"), f"{k}systems[{i}]")
                    for i, s in enumerate(_list(p.get("systems", []), k + "systems")))
    _unique([s.key for s in systems], k + "systems", "system (type, address)")
    comps = tuple(_component(_table(c, f"{k}components[{i}]"), f"{k}components[{i}]", i)
                  for i, c in enumerate(_list(p.get("components", []), k + "components")))
    _unique([c.id for c in comps], k + "components", "component id")
    _unique([c.key for c in comps], k + "components", "component (system, address)")
    cfg = PanelConfig(
        profile=profile,
        baud=_integer(p.get("baud", cfg.baud), k + "baud", 1, 4_000_000),
        uitd_address=_integer(p.get("uitd_address", cfg.uitd_address), k + "uitd_address", 0,
                              MAX_ADDRESS),
        centre_address=_integer(p.get("centre_address", cfg.centre_address),
                                k + "centre_address", 0, MAX_ADDRESS),
        confirm_timeout=_number(p.get("confirm_timeout", cfg.confirm_timeout),
                                k + "confirm_timeout", 0, 10, low_open=True),
        retries=_integer(p.get("retries", cfg.retries), k + "retries", 0, 100),
        periodic_interval=_number(p.get("periodic_interval", 0), k + "periodic_interval"),
        keepalive_interval=_number(p.get("keepalive_interval", cfg.keepalive_interval),
                                   k + "keepalive_interval", 0, low_open=True),
        check_post_answer=_after(p.get("check_post_answer", cfg.check_post_answer),
                                 k + "check_post_answer"),
        start_time=start,
        normal_bit=_boolean(p.get("normal_bit", True), k + "normal_bit"),
        systems=systems, components=comps, uitd=uitd,
        faults=_faults(_table(p.get("faults", {}), k + "faults"), k + "faults"))
    events = tuple(build_event(cfg, _table(e, f"{k}events[{i}]"), f"{k}events[{i}]")
                   for i, e in enumerate(_list(p.get("events", []), k + "events")))
    full = cfg.with_defaults()
    known = {s.key for s in full.systems}
    for i, e in enumerate(events):
        if e.system is not None and e.system not in known:
            raise ScenarioError(f"{k}events[{i}].system_type",
                                f"no system {e.system[0]}/{e.system[1]}; known: "
                                + ", ".join(f"{a}/{b}" for a, b in sorted(known)))
    return replace(cfg, events=tuple(sorted(events, key=lambda e: e.at)))


def _start_time(value: Any, key: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ScenarioError(key, f"expected a date-time like 2024-05-01T08:00:00, got "
                                     f"{value!r}") from None
    if not isinstance(value, datetime):
        raise ScenarioError(key, f"expected a local date-time, got {value!r}")
    if not 2000 <= value.year <= 2099:
        raise ScenarioError(key, "the time label holds years 2000..2099 only")
    return value.replace(tzinfo=None)


def _unique(values: Sequence[Any], key: str, what: str) -> None:
    seen: set[Any] = set()
    for i, v in enumerate(values):
        if v in seen:
            raise ScenarioError(f"{key}[{i}]", f"duplicate {what} {v!r}")
        seen.add(v)


def _system(t: Mapping[str, Any], key: str) -> SystemSpec:
    _check_keys(t, key, SYSTEM_KEYS)
    stype = _integer(t.get("type", 1), key + ".type", 0, 255)
    saddr = _integer(t.get("address", 1), key + ".address", 0, 255)
    return SystemSpec(stype, saddr,
                      _text(t.get("description", _system_text(stype, saddr)),
                            key + ".description", 255),
                      _version(t.get("version", "1.0"), key + ".version"))


def _component(t: Mapping[str, Any], key: str, index: int) -> ComponentSpec:
    _check_keys(t, key, COMPONENT_KEYS)
    for required in ("type", "address"):
        if required not in t:
            raise ScenarioError(f"{key}.{required}", "required")
    addr = t["address"]
    if isinstance(addr, list):
        if len(addr) != 2:
            raise ScenarioError(key + ".address", f"expected [loop, point], got {addr!r}")
        address = ComponentAddress.from_loop_point(
            _integer(addr[0], key + ".address[0]", 0, 0xFFFF),
            _integer(addr[1], key + ".address[1]", 0, 0xFFFF))
    else:
        address = ComponentAddress.from_int(_integer(addr, key + ".address", 0, 0xFFFFFFFF))
    analog_type = value = None
    if "analog_type" in t:
        analog_type = _integer(t["analog_type"], key + ".analog_type", 0, 255)
    if "value" in t:
        if analog_type is None:
            raise ScenarioError(key + ".value", "needs analog_type (表6: " + ", ".join(
                f"{a.value} {a.unit or a.en}" for a in ANALOG_TYPES.values()) + ")")
        value = _analog_value(t["value"], key + ".value", analog_type)
    st = _integer(t.get("system_type", 1), key + ".system_type", 0, 255)
    sa = _integer(t.get("system_address", 1), key + ".system_address", 0, 255)
    cid = t.get("id", f"{st}/{sa}/{address.value}")
    if not isinstance(cid, str) or not cid:
        raise ScenarioError(key + ".id", f"expected a non-empty string, got {cid!r}")
    return ComponentSpec(cid, _integer(t["type"], key + ".type", 0, 255), address,
                         _text(t.get("description", ""), key + ".description", DESCRIPTION_LEN),
                         st, sa, analog_type, value)


def _analog_value(value: Any, key: str, analog_type: int) -> float:
    number = _number(value, key, -math.inf)
    spec = ANALOG_TYPES.get(analog_type)
    raw = round(number / spec.resolution) if spec else round(number)
    if not -32768 <= raw <= 32767:
        unit = f" {spec.unit}" if spec and spec.unit else ""
        raise ScenarioError(key, f"{number:g}{unit} does not fit the signed 16-bit value "
                                 f"(raw {raw} at resolution "
                                 f"{spec.resolution if spec else 1:g})")
    return number


def _faults(t: Mapping[str, Any], key: str) -> FaultSettings:
    _check_keys(t, key, FAULT_KEYS)
    rates = {name: _number(t[name], f"{key}.{name}", 0, 1) for name in FAULT_KEYS[1:7]
             if name in t}
    seed = t.get("seed")
    return FaultSettings(
        **rates,
        garbage_bytes=_integer(t.get("garbage_bytes", 16), key + ".garbage_bytes", 1, 4096),
        split_parts=_integer(t.get("split_parts", 3), key + ".split_parts", 2, 1054),
        split_gap=_number(t.get("split_gap", 0.02), key + ".split_gap", 0, 10),
        seed=None if seed is None else _integer(seed, key + ".seed", 0, 2**63))


def build_event(cfg: PanelConfig, t: Mapping[str, Any], key: str) -> Event:
    """Validate one timeline entry (a ``[[panel.events]]`` table) against ``cfg``."""
    if "action" not in t:
        raise ScenarioError(key + ".action", f"required; one of: {', '.join(ACTIONS)}")
    action = _choice(t["action"], key + ".action", list(ACTIONS))
    spec = ACTIONS[action]
    allowed = (*_EVENT_BASE, *spec.params)
    if spec.target == "none":
        allowed = ("at", "action", *spec.params)
    elif spec.target == "component":
        allowed = ("at", "action", "component", *spec.params)
    for k in t:
        if k not in allowed:
            raise ScenarioError(f"{key}.{k}", f"unknown key for {action}; allowed: "
                                              f"{', '.join(allowed)}")
    for k in spec.required:
        if k not in t:
            raise ScenarioError(f"{key}.{k}", f"required for {action}")
    if "at" not in t:
        raise ScenarioError(key + ".at", "required (scenario seconds)")
    fields: dict[str, Any] = {"at": _number(t["at"], key + ".at"), "action": action}
    ref = t.get("component")
    if spec.target == "component" and ref is None:
        raise ScenarioError(key + ".component", f"required for {action}")
    if ref is not None:
        if isinstance(ref, bool) or not isinstance(ref, str | int):
            raise ScenarioError(key + ".component", f"expected a component id or address, "
                                                    f"got {ref!r}")
        fields["component"] = cfg.component_by_ref(ref, key + ".component")
    if "system_type" in t or "system_address" in t:
        fields["system"] = (_integer(t.get("system_type", 1), key + ".system_type", 0, 255),
                            _integer(t.get("system_address", 1), key + ".system_address", 0,
                                     255))
    if "uitd" in t:
        fields["uitd"] = _boolean(t["uitd"], key + ".uitd")
    if spec.target == "restore" and sum((ref is not None, "system" in fields,
                                         fields.get("uitd", False))) != 1:
        raise ScenarioError(key, "restore needs exactly one of: component, system_type/"
                                 "system_address, uitd = true")
    if "value" in t:
        fields["value"] = _number(t["value"], key + ".value", -math.inf)
    if "analog_type" in t:
        fields["analog_type"] = _integer(t["analog_type"], key + ".analog_type", 0, 255)
    if action == "analog":
        comp = next(c for c in (cfg.components or DEFAULT_COMPONENTS)
                    if c.id == fields["component"])
        atype = fields.get("analog_type", comp.analog_type)
        if atype is None:
            raise ScenarioError(key + ".analog_type", f"required: component {comp.id} has no "
                                                      "analog_type")
        fields["analog_type"] = atype
        fields["value"] = _analog_value(t["value"], key + ".value", atype)
    if "operator" in t:
        fields["operator"] = _integer(t["operator"], key + ".operator", 0, 255)
    if "count" in t:
        fields["count"] = _integer(t["count"], key + ".count", 1, 1_000_000)
    if "bytes" in t:
        fields["bytes"] = _integer(t["bytes"], key + ".bytes", 1, 4096)
    if "parts" in t:
        fields["parts"] = _integer(t["parts"], key + ".parts", 2, 1054)
    if "gap" in t:
        fields["gap"] = _number(t["gap"], key + ".gap", 0, 10)
    if "duration" in t:
        fields["duration"] = _number(t["duration"], key + ".duration", 0, low_open=True)
    if "after" in t:
        fields["after"] = _after(t["after"], key + ".after")
    return Event(**fields)


def parse_event_option(cfg: PanelConfig, action: str, text: str, option: str) -> Event:
    """A CLI shortcut such as ``--fire-alarm-at 5`` or ``--fault-at 20:module-pump-room``:
    ``AT[:COMPONENT]`` (default: the first component) for component actions, ``AT`` for the
    others (system actions act on the first system)."""
    at_text, _, ref = text.partition(":")
    try:
        at = float(at_text)
    except ValueError:
        raise ScenarioError(option, f"expected AT[:COMPONENT], got {text!r}") from None
    table: dict[str, Any] = {"at": at, "action": action}
    target = ACTIONS[action].target
    if target in ("component", "restore"):
        comps = cfg.components or DEFAULT_COMPONENTS
        table["component"] = ref or comps[0].id
    elif ref:
        raise ScenarioError(option, f"{action} takes no component; expected AT, got {text!r}")
    try:
        return build_event(cfg, table, option)
    except ScenarioError as exc:
        raise ScenarioError(option, exc.message) from None
