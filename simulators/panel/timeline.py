"""The panel scenario's timeline: its vocabulary of actions and the validated events.

Each ``[[panel.events]]`` table is read through :class:`common.config.Table` into a
:class:`TimelineEvent`. The keys an event takes depend on its action (:data:`ACTIONS`), so they
are checked up front, naming the action: a typo such as ``vlaue`` is reported as an unknown key
rather than as a missing ``value``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from common.config import ConfigError, Table
from protocols.gb26875 import ANALOG_TYPES

from .model import COMPONENT_CONDITIONS, OPERATIONS, ComponentSpec, SystemKey

NEVER = math.inf  # check-post: the operator never answers

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
_TARGET_KEYS = ("component", "system_type", "system_address")


@dataclass(frozen=True, slots=True)
class TimelineEvent:
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


def component_by_ref(components: Sequence[ComponentSpec], ref: str | int, key: str) -> str:
    """A component id from an id or a uint32 address (which must be unique)."""
    if isinstance(ref, str):
        for c in components:
            if c.id == ref:
                return c.id
        if ref.isdigit():  # from the command line: an address
            return component_by_ref(components, int(ref), key)
    else:
        found = [c for c in components if c.address.value == ref]
        if len(found) == 1:
            return found[0].id
    ids = ", ".join(c.id for c in components)
    raise ConfigError(key, f"no component {ref!r}; known: {ids}")


def seconds_or_never(t: Table, key: str, default: float) -> float:
    """Seconds (at least 0) or ``"never"`` (:data:`NEVER`)."""
    value = t.raw(key, default)
    if value == "never":
        return NEVER
    if isinstance(value, str):
        t.fail(key, f"must be seconds or \"never\", got {value!r}")
    return t.number(key, default, min=0)


def analog_value(t: Table, key: str, analog_type: int) -> float:
    """A measured value that must fit the signed 16-bit raw value at its type's resolution
    (表6)."""
    number = t.number(key)
    spec = ANALOG_TYPES.get(analog_type)
    raw = round(number / spec.resolution) if spec else round(number)
    if not -32768 <= raw <= 32767:
        unit = f" {spec.unit}" if spec and spec.unit else ""
        t.fail(key, f"{number:g}{unit} does not fit the signed 16-bit value (raw {raw} at "
                    f"resolution {spec.resolution if spec else 1:g})")
    return number


def parse_event(t: Table, components: Sequence[ComponentSpec]) -> TimelineEvent:
    """One ``[[panel.events]]`` table; ``components`` are those a ``component`` may name."""
    if not t.has("action"):
        t.fail("action", f"is required; one of {', '.join(repr(a) for a in ACTIONS)}")
    action = t.one_of("action", list(ACTIONS))
    spec = ACTIONS[action]
    targets = {"none": (), "component": ("component",)}.get(spec.target, _TARGET_KEYS)
    allowed = ("at", "action", *targets, *spec.params)
    for k in t.data:
        if k not in allowed:
            t.fail(k, f"unknown key for {action}; allowed here: {', '.join(allowed)}")
    for k in spec.required:
        if not t.has(k):
            t.fail(k, f"is required for {action}")
    fields: dict[str, Any] = {"at": t.number("at", min=0), "action": action}
    ref = t.raw("component", None)
    if spec.target == "component" and ref is None:
        t.fail("component", f"is required for {action}")
    if ref is not None:
        if isinstance(ref, bool) or not isinstance(ref, str | int):
            t.fail("component", f"must be a component id or address, got {ref!r}")
        fields["component"] = component_by_ref(components, ref, t.key("component"))
    if t.has("system_type") or t.has("system_address"):
        fields["system"] = (t.integer("system_type", 1, min=0, max=255),
                            t.integer("system_address", 1, min=0, max=255))
    fields["uitd"] = t.flag("uitd", False)
    if spec.target == "restore" and sum((ref is not None, "system" in fields,
                                         fields["uitd"])) != 1:
        t.fail("", "restore needs exactly one of: component, system_type/system_address, "
                   "uitd = true")
    fields["value"] = t.opt_number("value")
    fields["analog_type"] = t.opt_integer("analog_type", min=0, max=255)
    if action == "analog":
        comp = next(c for c in components if c.id == fields["component"])
        atype = fields["analog_type"] if fields["analog_type"] is not None else comp.analog_type
        if atype is None:
            t.fail("analog_type", f"is required, as component {comp.id} has no analog_type")
        fields["analog_type"] = atype
        fields["value"] = analog_value(t, "value", atype)
    fields["operator"] = t.integer("operator", 1, min=0, max=255)
    fields["count"] = t.integer("count", 1, min=1, max=1_000_000)
    fields["bytes"] = t.opt_integer("bytes", min=1, max=4096)
    fields["parts"] = t.opt_integer("parts", min=2, max=1054)
    fields["gap"] = t.opt_number("gap", min=0, max=10)
    fields["duration"] = t.opt_number("duration", above=0)
    if t.has("after"):
        fields["after"] = seconds_or_never(t, "after", 0.0)
    return TimelineEvent(**fields)
