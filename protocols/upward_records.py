"""``protocols.wire`` events -> GB/T 26875.3 uploads (pure): the reverse of
:mod:`protocols.panel_records`, for a collector that reports to a higher monitoring centre as a
UITD (collector/uitd/upstream*.py, docs/gb26875-upstream.md).

A centre learns states from state words, not from events: it diffs each source's new word
against the last one it had (panel_records does exactly that). So an event is sent up as the
*whole* word of its target after the event, built from the conditions still raised there, and
never as a single bit: a fire alarm on a component with a fault open is sent as fire + fault, or
the centre would restore the fault.

* A **component** target (a source with a component address) gets a type 2 upload
  (建筑消防设施部件运行状态, 图7, 图19): system type and address, component type, the 4-byte
  component address, the state word and the 31-byte description (部件说明, GB 18030).
* A **system** target (a panel's system source) gets a type 1 upload (建筑消防设施系统状态, 图6,
  图18). A system word has no description, so its text goes first in a type 6 upload
  (建筑消防设施系统配置情况, 图11), once and again when it changes (:func:`system_config`).
* Operator actions on a system (``operation`` events) become a type 4 upload (图9).
* Every object carries its own time label: when the event happened (``source_ms``, else
  ``receive_ms``), in the collector's zone (the standard defines none, §8.2.2).

Which bit stands for which event comes from panel_records' tables (:data:`SYSTEM_FLAGS`,
:data:`COMPONENT_FLAGS`), one home for the meaning. Events the target's figure has no bit for
are sent under the nearest one, listed in :data:`NEAREST` (a threshold alarm on a pressure
sensor arrives as 监管 supervisory; a door held open as 启动(开启)); a mapped-up record of any other
type decodes back to the same type. Events with no bit at all (``check_post``, ``test_mode``,
``manual_mode`` on a component...) are not sent (:func:`upload` returns None and says why).

The centre raises a condition again only when a word reports it under a new time label and the
condition is one it records every report of (fire, fault, supervisory, power and bus faults:
panel_records.ALARM_CLASS). So a raise that leaves the word as it was is sent only for those,
and a restore that leaves it as it was (another event still holds the same bit) is not sent.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal

from protocols.gb26875 import (
    ApplicationData,
    ComponentAddress,
    ComponentState,
    ComponentStatus,
    FacilityConfig,
    FacilityOperation,
    FacilityOperationRecord,
    SystemState,
    SystemStatus,
    TimeLabel,
)
from protocols.gb26875.fields import DESCRIPTION_LEN, TEXT_ENCODING
from protocols.panel_records import ALARM_CLASS, COMPONENT_FLAGS, SYSTEM_FLAGS, Flag
from protocols.wire import Bus, Event, EventType, Source

__all__ = ["CONFIG_TEXT_MAX", "GENERIC", "NEAREST", "Target", "Upload", "condition_bit",
           "fit_text", "preferred_target", "system_config", "time_label", "upload", "word"]

TargetKind = Literal["system", "component"]
GENERIC = 0
"""表4 / 表5 value 0, 通用 (generic): the system and component type of a source that names none."""
CONFIG_TEXT_MAX = 255
"""Type 6 description: a length byte, so at most 255 bytes of GB 18030 (图11)."""
_NORMAL = 1  # bit 0 = 1: 正常运行状态 (图6, 图7); 0 would say "test"


def _bits(flags: Collection[Flag]) -> dict[EventType, int]:
    return {f.event: f.bit for f in flags if not f.inverted}


_SYSTEM_BITS = _bits(SYSTEM_FLAGS)  # 图6 (bit 13 reset is a point)
_COMPONENT_BITS = _bits(COMPONENT_FLAGS)  # 图7
_POINTS = frozenset(f.event for f in (*SYSTEM_FLAGS, *COMPONENT_FLAGS) if f.point)

_NEAREST_BOTH = {
    "link_fault": "fault", "sensor_offline": "fault", "device_error": "fault",
    "threshold_low": "supervisory", "threshold_high": "supervisory",
    "out_of_range": "supervisory",
    "valve_off_normal": "supervisory",  # a signal valve off normal is a 监管 signal
    "door_open": "started",  # 启动(开启): open
    "running": "feedback",  # a pump's or fan's run-feedback contact: 反馈
}


def _nearest(pairs: Mapping[str, str]) -> dict[EventType, EventType]:
    # By value, so that a type this wire version lacks is simply left out.
    known = {t.value: t for t in EventType}
    return {known[a]: known[b] for a, b in pairs.items() if a in known and b in known}


NEAREST: Mapping[TargetKind, Mapping[EventType, EventType]] = {
    # 图7 has one power bit (电源故障) and no bus, link or sensor bits.
    "component": _nearest({**_NEAREST_BOTH, "mains_power_fault": "power_fault",
                           "backup_power_fault": "power_fault", "bus_fault": "fault"}),
    # 图6 splits power into mains and backup and has a bus bit; no link or sensor bits.
    "system": _nearest({**_NEAREST_BOTH, "power_fault": "mains_power_fault"}),
}
"""Events the target's figure has no bit for, and the type they are sent (and arrive) as."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a source's records go in the higher centre's addressing (§8.2.1.2)."""

    kind: TargetKind
    system_type: int
    system_address: int
    component_type: int = GENERIC
    component_address: int = 0

    @property
    def key(self) -> str:
        """Unique per centre: a system is known by type and address, a component by system
        and its 4-byte address (the reads 62/67 name no component type, 图32)."""
        if self.kind == "system":
            return f"s:{self.system_type}:{self.system_address}"
        return f"c:{self.system_type}:{self.system_address}:{self.component_address}"


@dataclass(frozen=True, slots=True)
class Upload:
    """One upload (one ADU, one serial) and the target's conditions once it is sent."""

    adu: ApplicationData
    conditions: frozenset[str]
    sent_as: EventType
    """The event type the centre decodes it as (:data:`NEAREST` may differ from the record's)."""


def preferred_target(source: Source) -> Target | None:
    """The address a source asks for: its own panel addressing (a component of a GB/T 26875.3
    panel keeps its system, type and 4-byte address, a system its type and address). None: the
    source has no panel addressing (Modbus, BLE, a UITD's own state); the caller allocates one
    (a generic component)."""
    if source.bus is not Bus.GB26875 or source.system_type is None \
            or source.system_address is None:
        return None
    if source.component_address is not None:
        return Target("component", source.system_type, source.system_address,
                      source.component_type if source.component_type is not None else GENERIC,
                      source.component_address)
    return Target("system", source.system_type, source.system_address)


def condition_bit(kind: TargetKind, event_type: EventType) -> tuple[EventType, int] | None:
    """The type an event is sent as on a target of ``kind``, and its bit; None: no bit."""
    bits = _SYSTEM_BITS if kind == "system" else _COMPONENT_BITS
    sent = NEAREST[kind].get(event_type, event_type)
    bit = bits.get(sent)
    return None if bit is None else (sent, bit)


def word(kind: TargetKind, conditions: Collection[str]) -> int:
    """The state word of a target with ``conditions`` (event type values) raised: bit 0 set
    (normal operation, 图6/图7) and the bit of each condition."""
    value = _NORMAL
    for c in conditions:
        found = condition_bit(kind, EventType(c))
        if found is not None:
            value |= 1 << found[1]
    return value


_DROPPED = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Controls (Cc), format characters (Cf: the bidirectional overrides and isolates U+202A-202E,
U+2066-2069, which reorder the text around them on a display, and zero-width characters) and
the line and paragraph separators: none belongs in a 31-byte component description."""


def fit_text(text: str | None, size: int) -> str:
    """``text`` as the centre will read it back from a ``size``-byte GB 18030 field: control
    characters dropped (a NUL ends the field, §3.1 of the notes; an ESC or a newline is hostile
    to a display we do not know), and characters GB 18030 cannot hold; cut at a character
    boundary to fit, surrounding blanks trimmed (the decoder trims them). Bidirectional
    overrides and other format characters (:data:`_DROPPED`) are dropped too."""
    if not text:
        return ""
    out: list[str] = []
    used = 0
    for ch in text:
        if unicodedata.category(ch) in _DROPPED:
            continue
        try:
            n = len(ch.encode(TEXT_ENCODING))
        except UnicodeEncodeError:
            continue
        if used + n > size:
            break
        out.append(ch)
        used += n
    return "".join(out).strip()


def time_label(ms: int, tz: tzinfo | None = None) -> TimeLabel | None:
    """Epoch ms as a time label in ``tz`` (None: the local zone); None outside 2000-2099."""
    try:
        when = datetime.fromtimestamp(ms / 1000, tz) if tz is not None else \
            datetime.fromtimestamp(ms / 1000)
    except (OverflowError, OSError, ValueError):
        return None
    try:
        return TimeLabel.from_datetime(when.replace(tzinfo=None))
    except ValueError:
        return None


def _label(event: Event, tz: tzinfo | None) -> TimeLabel | None:
    label = time_label(event.source_ms, tz) if event.source_ms is not None else None
    return label if label is not None else time_label(event.receive_ms, tz)


def system_config(target: Target, description: str | None) -> ApplicationData | None:
    """A type 6 upload (图11) naming a system target, so that the centre shows its text; None
    for a component target (its text rides in every type 2 object) or no text."""
    text = fit_text(description, CONFIG_TEXT_MAX)
    if target.kind != "system" or not text:
        return None
    return ApplicationData(6, (FacilityConfig(target.system_type, target.system_address,
                                              text),))


def upload(event: Event, target: Target, conditions: Collection[str], *,
           description: str | None = None, tz: tzinfo | None = None
           ) -> Upload | str:
    """The upload for ``event`` on ``target`` whose raised conditions are ``conditions``;
    a reason (str) when nothing is to be sent.

    ``description``: the text for a component (default: the source's), cut to the 31 bytes of
    图7 (:func:`fit_text`)."""
    before = frozenset(conditions)
    label = _label(event, tz)
    if event.type is EventType.OPERATION:
        return _operation(event, target, before, label)
    found = condition_bit(target.kind, event.type)
    if found is None:
        return f"{event.type.value} has no bit in a {target.kind} state word"
    sent_as, bit = found
    old = word(target.kind, before)
    if event.type in _POINTS:  # 复位: a happening, sent with its bit set once
        if not event.active:
            return f"{event.type.value} is a point: nothing to restore"
        after, value = before, old | 1 << bit
    else:
        after = before | {event.type.value} if event.active else before - {event.type.value}
        value = word(target.kind, after)
        if value == old and not (event.active and sent_as in ALARM_CLASS):
            return "the state word does not change"
    if target.kind == "system":
        obj: SystemStatus | ComponentStatus = SystemStatus(
            target.system_type, target.system_address, SystemState(value), label)
        return Upload(ApplicationData(1, (obj,)), after, sent_as)
    text = fit_text(event.source.description if description is None else description,
                    DESCRIPTION_LEN)
    obj = ComponentStatus(target.system_type, target.system_address, target.component_type,
                          ComponentAddress.from_int(target.component_address),
                          ComponentState(value), text, label)
    return Upload(ApplicationData(2, (obj,)), after, sent_as)


_OPERATION_FLAGS: Mapping[str, FacilityOperation] = {
    str(f.name).lower(): f for f in FacilityOperation}


def _operation(event: Event, target: Target, before: frozenset[str],
               label: TimeLabel | None) -> Upload | str:
    """An operator action (图9) on a system target: flags named as panel_records names them."""
    if target.kind != "system":
        return "an operation goes up only for a system"
    flags = FacilityOperation(0)
    for name in event.operations:
        flag = _OPERATION_FLAGS.get(name)
        if flag is None:
            return f"operation {name!r} has no bit in 图9"
        flags |= flag
    if not flags:
        return "an operation without a named action"
    operator = event.operator if event.operator is not None and event.operator <= 0xFF else 0
    obj = FacilityOperationRecord(target.system_type, target.system_address, flags, operator,
                                  label)
    return Upload(ApplicationData(4, (obj,)), before, EventType.OPERATION)
