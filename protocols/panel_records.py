"""Decoded GB/T 26875.3 uploads -> ``protocols.wire`` records (pure, table-driven).

The bridge between the standalone codec (:mod:`protocols.gb26875`, which knows nothing of the
wire contract and is publishable alone) and firegate's records, as :mod:`protocols.registers`
bridges Modbus register maps: any process that hears a panel (the edge panel driver today, a
collector acting as monitoring centre later) maps its frames here, one mapping for all.

A panel reports *states* (a system's or component's state word, 图6/图7; the UITD's, 图13) and
*points in time* (operator actions, 图9/图14; analog samples, 表6). States become events by
diffing each source's new word against the last one known: a bit that rises is a raise
(``active=True``), a bit that falls a restore. The first word seen from a source is diffed
against the conditions the agent had raised for it when it last stopped (``previous``): a
condition that cleared meanwhile is restored, and a source with none raises its active
conditions only. Points become one record each.

Diffing alone loses alarms, because a UITD does not send its words in the order they happened:
fire alarms go first (GB 26875.1 4.1.2.3), so after an outage a detector's second fire alarm can
arrive before the reset that cleared its first, and fire -> fire is no change. Each state object
carries the time its state occurred (its own time label, 图5, 图18/图19; the header's label is
only when the packet was sent, 表1). So the diff also looks at those labels:

* **Every upload that reports an alarm-class condition is recorded** (a condition of priority
  fire or alarm, :data:`ALARM_CLASS`: fire alarm, fault, supervisory, power and bus faults). In
  a facility word (types 1 and 2) uploaded by the UITD, a condition still set is raised again
  when the word's own time label is not the one of its last raise. An answer to a read (command
  5) says what holds now, not that it happened again, and the UITD's own word (type 21) restates
  the facility's alarms at the time of the report: both are diffed only.
* **A repeat is folded**: a raise or a restore whose own time label is the one of the last
  record of the same kind for that condition is the same report again (a resend numbered anew,
  a read answering what an upload said), unless a record of the other kind came in between with
  a time label no later than it. That record was a late report of something older, and this
  one restates what holds now, so that the last record of a condition stays the true one (the
  pipeline's conditions, the local view and the collector's risk board read records in order).
  A folded change leaves the condition as its last record says.

Time labels are compared for equality, and their order only decides whether a repeat is
restated; nothing is dropped because a panel clock was set back (90). Without a time label of
its own (a dialect without them, an impossible label) a word is diffed only. The labels last
recorded are not kept across restarts (``previous`` holds conditions, not times): after one, a
condition still set is raised again by the first upload that reports it. A fire alarm may be
repeated; none is lost.

Mapping is two-phase so that nothing is lost when the outbox refuses records:
:meth:`PanelMapper.map` computes the records and the states they lead to without changing
anything, and the caller calls :meth:`PanelMapper.commit` only once the records are durable (the
edge driver: once ``emit`` has returned). An upload whose records could not be stored is
therefore mapped again, whole, when the panel resends it.

Source ids (stable, unique per gateway; ``<prefix>`` is the panel's ``source_prefix``)::

    <prefix>/<sys type>-<sys addr>/system                      system state, operations
    <prefix>/<sys type>-<sys addr>/<comp type>-0x<addr hex8>   component state, analog values
    <uitd id>  (e.g. panel/com1/uitd) and <uitd id>/centre_link, <uitd id>/panel_line
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from protocols.gb26875 import (
    ANALOG_TYPES,
    COMPONENT_TYPES,
    SYSTEM_TYPES,
    Adu,
    AnalogValue,
    ApplicationData,
    ComponentConfig,
    ComponentStatus,
    FacilityConfig,
    FacilityOperationRecord,
    InfoObject,
    SystemStatus,
    TimeLabel,
    UitdConfig,
    UitdOperation,
    UitdOperationRecord,
    UitdStatus,
    type_name,
)
from protocols.gb26875.tables import flag_names, lookup
from protocols.wire import (
    DEFAULT_PRIORITY,
    UNITS,
    Bus,
    Event,
    EventType,
    Measurement,
    Priority,
    Quantity,
    Record,
    Source,
)

__all__ = ["ALARM_CLASS", "COMPONENT_FLAGS", "SYSTEM_FLAGS", "UITD_FLAGS", "Flag", "Mapped",
           "Mark", "PanelMapper", "label_ms"]

DESCRIPTION_MAX = 64  # protocols.wire source description limit


@dataclass(frozen=True, slots=True)
class Flag:
    """One bit of a state word and the event it stands for."""

    bit: int
    event: EventType
    zh: str  # the figure's "=1" text (for bit 0 the "=0" text: 测试状态)
    point: bool = False  # a happening, not a condition: raised when set, never restored
    inverted: bool = False  # the condition holds while the bit is *clear* (bit 0: test)
    suffix: str = ""  # events of this bit go to a sub-source: <source id><suffix>


# 图6 建筑消防设施系统状态 (2 bytes LE). Bit 0 = 1 means normal, 0 test: only reported when the
# site asks (report_test_mode), because many devices always send it clear (notes §4.3).
SYSTEM_FLAGS: tuple[Flag, ...] = (
    Flag(0, EventType.TEST_MODE, "测试状态", inverted=True),
    Flag(1, EventType.FIRE_ALARM, "火警"),
    Flag(2, EventType.FAULT, "故障"),
    Flag(3, EventType.DISABLED, "屏蔽"),
    Flag(4, EventType.SUPERVISORY, "监管"),
    Flag(5, EventType.STARTED, "启动(开启)"),
    Flag(6, EventType.FEEDBACK, "反馈"),
    Flag(7, EventType.DELAY, "延时状态"),
    Flag(8, EventType.MAINS_POWER_FAULT, "主电故障"),
    Flag(9, EventType.BACKUP_POWER_FAULT, "备电故障"),
    Flag(10, EventType.BUS_FAULT, "总线故障"),
    Flag(11, EventType.MANUAL_MODE, "手动状态"),
    Flag(12, EventType.CONFIG_CHANGED, "配置改变"),
    Flag(13, EventType.RESET, "复位", point=True),
)

# 图7 建筑消防设施部件状态 (2 bytes LE); bit 8 is the component's power fault.
COMPONENT_FLAGS: tuple[Flag, ...] = (*SYSTEM_FLAGS[:8], Flag(8, EventType.POWER_FAULT, "电源故障"))

# 图13 用户信息传输装置运行状态 (1 byte). Bits 5 and 6 are both link faults, of different links:
# each gets its own sub-source so that one clearing never restores the other.
UITD_FLAGS: tuple[Flag, ...] = (
    Flag(0, EventType.TEST_MODE, "测试状态", inverted=True),
    Flag(1, EventType.FIRE_ALARM, "火警"),
    Flag(2, EventType.FAULT, "故障"),
    Flag(3, EventType.MAINS_POWER_FAULT, "主电故障"),
    Flag(4, EventType.BACKUP_POWER_FAULT, "备电故障"),
    Flag(5, EventType.LINK_FAULT, "与监控中心通信信道故障", suffix="/centre_link"),
    Flag(6, EventType.LINK_FAULT, "监测连接线路故障", suffix="/panel_line"),
)

# Conditions whose every report is recorded (see the module docstring): those the wire contract
# sends as fire or alarm, ahead of everything else.
ALARM_CLASS: frozenset[EventType] = frozenset(
    t for t, p in DEFAULT_PRIORITY.items() if p <= Priority.ALARM)

_QUANTITY: Mapping[str, Quantity] = {q.value: q for q in Quantity}
_CONDITION_BITS = 0x1FE  # 图7 bits 1-8: a component with any of these set is worth re-reading

SystemKey = tuple[int, int]  # system type, system address
ComponentKey = tuple[int, int, int]  # system type, system address, component address (uint32)
ConditionKey = tuple[str, str]  # source id, event type value

# The part of a source id after ``<prefix>/`` (see the module docstring), read back so that the
# sources of conditions raised before a restart can be read again (61 / 62).
_SYSTEM_ID = re.compile(r"(\d{1,3})-(\d{1,3})/system")
_COMPONENT_ID = re.compile(r"(\d{1,3})-(\d{1,3})/\d{1,3}-0x([0-9a-f]{8})")


def label_ms(label: TimeLabel | None, tz: tzinfo | None = None) -> int | None:
    """A panel time label as epoch milliseconds, in ``tz`` (None: the gateway's zone).

    The standard gives time labels no zone (§8.2.2); an impossible label (a panel whose clock
    was never set) gives None rather than a wrong time.
    """
    when = None if label is None else label.to_datetime()
    if when is None:
        return None
    aware = when.replace(tzinfo=tz) if tz is not None else when.astimezone()
    ms = int(aware.timestamp() * 1000)
    return ms if ms >= 0 else None


def _text(text: str | None) -> str | None:
    return text[:DESCRIPTION_MAX] if text else None


@dataclass(frozen=True, slots=True)
class Mark:
    """The last records of one condition made from state words: the own time labels (epoch
    ms; None: the word had none) of its last raise and last restore, and which came last."""

    active: bool
    raised: int | None = None
    restored: int | None = None

    @property
    def last(self) -> int | None:
        """The time label of the last record."""
        return self.raised if self.active else self.restored

    def after(self, active: bool, label: int | None) -> Mark:
        """This mark once a record (``active``, ``label``) is made."""
        if active:
            return Mark(True, label, self.restored)
        return Mark(False, self.raised, label)

    def renews(self, label: int | None) -> bool:
        """Whether a word that still reports the condition, labelled ``label``, reports it
        anew: it has a time label, and not the one of the last raise."""
        return label is not None and label != self.raised

    def repeats(self, active: bool, label: int | None) -> bool:
        """Whether a change to ``active`` labelled ``label`` repeats a record made already: the
        last of that kind has the same time label, and no record of the other kind came since
        with a time label no later than it (a late report that this one must supersede)."""
        if label is None or label != (self.raised if active else self.restored):
            return False
        return self.active == active or (self.last is not None and self.last > label)


_NO_MARK = Mark(False)


@dataclass(frozen=True, slots=True)
class Mapped:
    """The records one upload (or one read answer) stands for, and the state it leads to."""

    records: tuple[Record, ...]
    states: Mapping[str, int] = field(default_factory=dict)
    marks: Mapping[ConditionKey, Mark] = field(default_factory=dict)
    descriptions: Mapping[object, str] = field(default_factory=dict)
    systems: frozenset[SystemKey] = frozenset()
    components: Mapping[str, ComponentKey] = field(default_factory=dict)
    summary: str = ""


@dataclass
class _Work:
    """Scratch state of one :meth:`PanelMapper.map` call (overlays the committed state)."""

    receive_ms: int
    fallback_ms: int | None
    answer: bool = False
    records: list[Record] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    marks: dict[ConditionKey, Mark] = field(default_factory=dict)
    descriptions: dict[object, str] = field(default_factory=dict)
    systems: set[SystemKey] = field(default_factory=set)
    components: dict[str, ComponentKey] = field(default_factory=dict)


class PanelMapper:
    """Maps one panel's uploads to records, remembering each source's last state word."""

    def __init__(self, prefix: str, uitd_id: str, *, tz: tzinfo | None = None,
                 report_test_mode: bool = False, uitd_description: str | None = None,
                 previous: Mapping[str, Collection[str]] | None = None) -> None:
        """``previous``: source id -> event type values raised and not restored when the agent
        last stopped (the edge agent's ``DriverContext.previous``); the first word of each
        source is diffed against them instead of against "all clear"."""
        self.prefix = prefix
        self.uitd_id = uitd_id
        self.tz = tz
        self.report_test_mode = report_test_mode
        self.uitd_description = uitd_description
        self._states: dict[str, int] = {}
        self._marks: dict[ConditionKey, Mark] = {}
        self._descriptions: dict[object, str] = {}
        self._systems: dict[SystemKey, None] = {}
        self._components: dict[str, ComponentKey] = {}
        self._previous: dict[str, frozenset[str]] = {
            sid: frozenset(types) for sid, types in (previous or {}).items() if types}

    # -- ids ---------------------------------------------------------------------------------

    def system_id(self, system_type: int, system_address: int) -> str:
        return f"{self.prefix}/{system_type}-{system_address}/system"

    def component_id(self, system_type: int, system_address: int, component_type: int,
                     address: int) -> str:
        return f"{self.prefix}/{system_type}-{system_address}/{component_type}-0x{address:08x}"

    # -- what the driver reads back ------------------------------------------------------------

    def state(self, source_id: str) -> int | None:
        """The last committed state word of a source."""
        return self._states.get(source_id)

    def systems(self) -> list[SystemKey]:
        """Systems seen so far, in order of first sight."""
        return list(self._systems)

    def active_components(self) -> list[ComponentKey]:
        """Components whose last known state has a condition (fire, fault, ...) set: the ones
        whose state may have changed unseen while the link was down."""
        return [key for sid, key in self._components.items()
                if self._states.get(sid, 0) & _CONDITION_BITS]

    def component_sources(self) -> dict[str, ComponentKey]:
        """Every component seen, by source id."""
        return dict(self._components)

    def previous_systems(self) -> list[SystemKey]:
        """Systems with conditions raised before the restart whose state is not known yet:
        to read (61), so that what cleared while the agent was down is restored."""
        found = []
        for sid in self._unseen_previous():
            match = _SYSTEM_ID.fullmatch(sid[len(self.prefix) + 1:])
            if match is not None and max(int(match[1]), int(match[2])) <= 0xFF:
                found.append((int(match[1]), int(match[2])))
        return found

    def previous_components(self) -> dict[str, ComponentKey]:
        """Components with conditions raised before the restart whose state is not known yet,
        by source id: to read (62) for the same reason."""
        found = {}
        for sid in self._unseen_previous():
            match = _COMPONENT_ID.fullmatch(sid[len(self.prefix) + 1:])
            if match is not None and max(int(match[1]), int(match[2])) <= 0xFF:
                found[sid] = (int(match[1]), int(match[2]), int(match[3], 16))
        return found

    def _unseen_previous(self) -> list[str]:
        return sorted(sid for sid in self._previous
                      if sid.startswith(self.prefix + "/") and sid not in self._states)

    # -- mapping -------------------------------------------------------------------------------

    def map(self, adu: Adu | None, receive_ms: int, frame_time: TimeLabel | None = None, *,
            answer: bool = False) -> Mapped:
        """The records for one decoded ADU; changes nothing until :meth:`commit`.

        ``frame_time`` (the frame header's time label) stands in for objects that carry no
        time label of their own (dialects without them, §8.2.1 types without them) as the
        records' panel time; it never makes a word a new report. ``answer``: the ADU answers
        a read (command 5, §8.3.2): it says what holds, so a condition still set is not raised
        again whatever its time label (see the module docstring).
        """
        if not isinstance(adu, ApplicationData):
            what = "empty" if adu is None else f"raw {type_name(adu.type_mark)}"
            return Mapped((), summary=what)
        work = _Work(receive_ms, label_ms(frame_time, self.tz), answer)
        for obj in adu.objects:
            self._object(obj, work)
        return Mapped(tuple(work.records), work.states, work.marks, work.descriptions,
                      frozenset(work.systems), work.components,
                      f"{type_name(adu.type_mark)} x{len(adu.objects)}")

    def commit(self, mapped: Mapped) -> None:
        """Make a mapping's states the known ones (after its records are durable)."""
        self._states.update(mapped.states)
        self._marks.update(mapped.marks)
        self._descriptions.update(mapped.descriptions)
        self._systems.update(dict.fromkeys(sorted(mapped.systems)))
        self._components.update(mapped.components)

    def _object(self, obj: InfoObject, w: _Work) -> None:
        handler = _HANDLERS.get(type(obj))
        if handler is not None:
            handler(self, obj, w)
        # Types 5, 8, 25, 28 (versions, clocks) carry nothing a record holds.

    def _own(self, obj: InfoObject) -> int | None:
        """The object's own time label (图5) as epoch ms; None without a valid one."""
        return label_ms(getattr(obj, "time", None), self.tz)

    def _ms(self, obj: InfoObject, w: _Work) -> int | None:
        ms = self._own(obj)
        return ms if ms is not None else w.fallback_ms

    def _described(self, key: object, w: _Work) -> str | None:
        return w.descriptions.get(key) or self._descriptions.get(key)

    def _system_source(self, st: int, sa: int, w: _Work) -> Source:
        w.systems.add((st, sa))
        return Source(self.system_id(st, sa), Bus.GB26875, system_type=st, system_address=sa,
                      description=_text(self._described((st, sa), w)))

    def _component_source(self, st: int, sa: int, ct: int, address: int, desc: str,
                          w: _Work) -> Source:
        w.systems.add((st, sa))
        key = (st, sa, address)
        if desc:
            w.descriptions[key] = desc
        return Source(self.component_id(st, sa, ct, address), Bus.GB26875, system_type=st,
                      system_address=sa, component_type=ct, component_address=address,
                      description=_text(desc or self._described(key, w)))

    def uitd_source(self, suffix: str = "") -> Source:
        """The UITD itself (``suffix``: one of its links, see :data:`UITD_FLAGS`)."""
        return Source(self.uitd_id + suffix, Bus.GB26875, description=_text(
            self._descriptions.get("uitd") or self.uitd_description))

    def _diff(self, source: Source, word: int, flags: Sequence[Flag], what: str,
              obj: InfoObject, w: _Work, sub: dict[str, Source] | None = None, *,
              renew: bool = False) -> None:
        """Events for the bits of ``word`` (of ``obj``) against the source's last known word.

        Without one (the first word since the agent started), a condition "was" active iff it
        was raised and not restored when the agent last stopped. ``renew``: a condition of
        :data:`ALARM_CLASS` still set is raised again under a new time label (an upload of a
        facility word). Repeats are folded (:meth:`Mark.repeats`).
        """
        sid = source.id
        old = w.states.get(sid, self._states.get(sid))
        label, source_ms = self._own(obj), self._ms(obj, w)
        renew = renew and not w.answer
        kept = word
        for flag in flags:
            if flag.event is EventType.TEST_MODE and not self.report_test_mode:
                continue
            src = (sub or {}).get(flag.suffix, source) if flag.suffix else source
            now = bool(word >> flag.bit & 1) != flag.inverted
            if old is None:
                was = flag.event.value in self._previous.get(src.id, ())
            else:
                was = bool(old >> flag.bit & 1) != flag.inverted
            key = (src.id, flag.event.value)
            mark = w.marks.get(key) or self._marks.get(key) or _NO_MARK
            if flag.point:
                if not now or was:
                    continue  # a point that ended, or one still set
            elif now == was:
                if not (now and renew and flag.event in ALARM_CLASS and mark.renews(label)):
                    continue  # unchanged, or a condition still set reported again as it was
            elif mark.repeats(now, label):  # folded: the condition stays as its last record says
                kept = kept & ~(1 << flag.bit) | (mark.active != flag.inverted) << flag.bit
                continue
            w.records.append(Event(source=src, type=flag.event, active=now,
                                   receive_ms=w.receive_ms, source_ms=source_ms, state=word,
                                   detail=f"{flag.zh} / {what}"))
            if not flag.point:
                w.marks[key] = mark.after(now, label)
        w.states[sid] = kept

    # -- one handler per upload object type (§8.2.1) -----------------------------------------

    def _system_state(self, obj: SystemStatus, w: _Work) -> None:  # type 1, 图6
        src = self._system_source(obj.system_type, obj.system_address, w)
        what = lookup(SYSTEM_TYPES, obj.system_type).zh
        self._diff(src, int(obj.state), SYSTEM_FLAGS, what, obj, w, renew=True)

    def _component_state(self, obj: ComponentStatus, w: _Work) -> None:  # type 2, 图7
        src = self._component_source(obj.system_type, obj.system_address, obj.component_type,
                                     obj.address.value, obj.description, w)
        w.components[src.id] = (obj.system_type, obj.system_address, obj.address.value)
        what = lookup(COMPONENT_TYPES, obj.component_type).zh
        self._diff(src, int(obj.state), COMPONENT_FLAGS, what, obj, w, renew=True)

    def _analog(self, obj: AnalogValue, w: _Work) -> None:  # type 3, 图8, 表6
        if obj.analog_type == 0:  # 表6: 0 = 未用 (unused)
            return
        src = self._component_source(obj.system_type, obj.system_address, obj.component_type,
                                     obj.address.value, "", w)
        spec = ANALOG_TYPES.get(obj.analog_type)
        unit = spec.unit if spec is not None else ""
        quantity = _QUANTITY.get(spec.quantity, Quantity.ANALOG) if spec else Quantity.ANALOG
        if unit not in UNITS[quantity]:
            quantity = Quantity.ANALOG  # a 表6 unit the wire contract does not list
        if quantity is Quantity.ANALOG:  # reserved or user-defined type: one source per type
            src = Source(f"{src.id}/analog-{obj.analog_type}", Bus.GB26875,
                         system_type=src.system_type, system_address=src.system_address,
                         component_type=src.component_type,
                         component_address=src.component_address, description=src.description)
        w.records.append(Measurement(source=src, quantity=quantity, value=obj.value, unit=unit,
                                     receive_ms=w.receive_ms, source_ms=self._ms(obj, w)))

    def _operation(self, obj: FacilityOperationRecord, w: _Work) -> None:  # type 4, 图9
        ops = flag_names(obj.flags)
        if ops:  # all bits clear = 无操作: nothing happened
            w.records.append(Event(
                source=self._system_source(obj.system_type, obj.system_address, w),
                type=EventType.OPERATION, receive_ms=w.receive_ms, source_ms=self._ms(obj, w),
                operations=ops, operator=obj.operator, state=int(obj.flags)))

    def _system_config(self, obj: FacilityConfig, w: _Work) -> None:  # type 6, 图11
        w.systems.add((obj.system_type, obj.system_address))
        if obj.description:
            w.descriptions[(obj.system_type, obj.system_address)] = obj.description

    def _component_config(self, obj: ComponentConfig, w: _Work) -> None:  # type 7, 图12
        w.systems.add((obj.system_type, obj.system_address))
        if obj.description:
            w.descriptions[(obj.system_type, obj.system_address, obj.address.value)] = \
                obj.description

    def _uitd_state(self, obj: UitdStatus, w: _Work) -> None:  # type 21, 图13
        src = self.uitd_source()
        sub = {f.suffix: self.uitd_source(f.suffix) for f in UITD_FLAGS if f.suffix}
        self._diff(src, int(obj.state), UITD_FLAGS, "用户信息传输装置", obj, w, sub)

    def _uitd_operation(self, obj: UitdOperationRecord, w: _Work) -> None:  # type 24, 图14
        src, ms = self.uitd_source(), self._ms(obj, w)
        if obj.flags & UitdOperation.CHECK_POST_ANSWER:  # 查岗应答: the answer to a type 91
            w.records.append(Event(source=src, type=EventType.CHECK_POST, receive_ms=w.receive_ms,
                                   source_ms=ms, operator=obj.operator, detail="查岗应答"))
        ops = flag_names(obj.flags & ~UitdOperation.CHECK_POST_ANSWER)
        if ops:
            w.records.append(Event(source=src, type=EventType.OPERATION, receive_ms=w.receive_ms,
                                   source_ms=ms, operations=ops, operator=obj.operator,
                                   state=int(obj.flags)))

    def _uitd_config(self, obj: UitdConfig, w: _Work) -> None:  # type 26, 图16
        if obj.description:
            w.descriptions["uitd"] = obj.description


# Upload object class -> handler (表3 type marks 1-4, 6, 7, 21, 24, 26).
_HANDLERS: Mapping[type[InfoObject], Callable[[PanelMapper, Any, _Work], None]] = {
    SystemStatus: PanelMapper._system_state,
    ComponentStatus: PanelMapper._component_state,
    AnalogValue: PanelMapper._analog,
    FacilityOperationRecord: PanelMapper._operation,
    FacilityConfig: PanelMapper._system_config,
    ComponentConfig: PanelMapper._component_config,
    UitdStatus: PanelMapper._uitd_state,
    UitdOperationRecord: PanelMapper._uitd_operation,
    UitdConfig: PanelMapper._uitd_config,
}
