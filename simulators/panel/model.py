"""The simulated building's state: systems, components, analog values, operation records.

Pure data and rules, no I/O and no protocol session. The UITD engine changes the model when a
scenario action happens and asks it for the information objects to upload, and answers the
centre's reads (types 61-88) from the same model, so what a read returns always agrees with what
was uploaded before.

Rules (where the standard is silent, the behaviour of common fire alarm panels):

* A component's fire alarm **latches** until the system is reset; ``restore`` clears every other
  condition (fault, supervisory, started, feedback, disabled, power fault) but not a fire alarm.
* A system's state word (图6) is its own conditions (mains, backup power and bus faults) plus the
  union of its components' conditions; a power or bus fault also sets the fault bit.
* The UITD's state (图13) shows a fire alarm while any component is in alarm, its own mains and
  backup faults, and the link-to-centre fault while the link is down or a transmission failed.
* Bit 0 (正常运行状态, 1 = normal) is set unless the scenario says the device sends it clear, as
  many real devices do (reference notes §4.3).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from protocols.gb26875 import (
    AnalogValue,
    ComponentAddress,
    ComponentConfig,
    ComponentState,
    ComponentStatus,
    FacilityConfig,
    FacilityOperation,
    FacilityOperationRecord,
    FacilitySoftwareVersion,
    FacilityTime,
    SystemState,
    SystemStatus,
    TimeLabel,
    UitdConfig,
    UitdOperation,
    UitdOperationRecord,
    UitdSoftwareVersion,
    UitdState,
    UitdStatus,
    UitdTime,
)

SystemKey = tuple[int, int]  # (system type, system address)
ComponentKey = tuple[int, int, bytes]  # (system type, system address, 4 raw address bytes)

_T = TypeVar("_T")
MAX_RECORDS = 10_000  # GB 25506-style record capacity per class; older records are dropped

# Conditions a component can be in (图7), by action name.
COMPONENT_CONDITIONS: dict[str, ComponentState] = {
    "fire_alarm": ComponentState.FIRE_ALARM,
    "fault": ComponentState.FAULT,
    "disable": ComponentState.DISABLED,
    "supervisory": ComponentState.SUPERVISORY,
    "start": ComponentState.STARTED,
    "feedback": ComponentState.FEEDBACK,
    "delay": ComponentState.DELAY,
    "power_fault": ComponentState.POWER_FAULT,
}
# What ``restore`` clears on a component: everything but a latched fire alarm.
RESTORABLE = ComponentState(sum(COMPONENT_CONDITIONS.values()) & ~ComponentState.FIRE_ALARM)
# What an operator reset clears on the components of a system (faults are physical and stay).
RESET_CLEARS = (ComponentState.FIRE_ALARM | ComponentState.SUPERVISORY | ComponentState.STARTED
                | ComponentState.FEEDBACK | ComponentState.DELAY)
# Conditions of a system itself (图6), by action name.
SYSTEM_CONDITIONS: dict[str, SystemState] = {
    "mains_fault": SystemState.MAINS_POWER_FAULT,
    "backup_fault": SystemState.BACKUP_POWER_FAULT,
    "bus_fault": SystemState.BUS_FAULT,
}
UITD_CONDITIONS: dict[str, UitdState] = {
    "mains_fault": UitdState.MAINS_POWER_FAULT,
    "backup_fault": UitdState.BACKUP_POWER_FAULT,
}
# Component bits that show in the system word (same bit positions in 图6 and 图7).
_AGGREGATED = (ComponentState.FIRE_ALARM | ComponentState.FAULT | ComponentState.DISABLED
               | ComponentState.SUPERVISORY | ComponentState.STARTED | ComponentState.FEEDBACK
               | ComponentState.DELAY)
# Operator actions at the facility (图9), by action name.
OPERATIONS: dict[str, FacilityOperation] = {
    "reset": FacilityOperation.RESET,
    "silence": FacilityOperation.SILENCE,
    "manual_alarm": FacilityOperation.MANUAL_ALARM,
    "alarm_cleared": FacilityOperation.ALARM_CLEARED,
    "self_test": FacilityOperation.SELF_TEST,
    "acknowledge": FacilityOperation.ACKNOWLEDGE,
    "test": FacilityOperation.TEST,
}


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """A building fire facility system (系统类型 表4 + 系统地址) connected to the UITD."""

    type: int = 1
    address: int = 1
    description: str = ""  # type 6 configuration text
    version: tuple[int, int] = (1, 0)  # type 5 software version

    @property
    def key(self) -> SystemKey:
        return (self.type, self.address)


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """A component (部件) of a system: detector, call point, module, pump, sensor..."""

    id: str
    type: int  # 部件类型, 表5
    address: ComponentAddress
    description: str = ""  # 部件说明, GB 18030, at most 31 bytes
    system_type: int = 1
    system_address: int = 1
    analog_type: int | None = None  # 表6, for components that report a measured value
    value: float | None = None  # initial physical value

    @property
    def key(self) -> ComponentKey:
        return (self.system_type, self.system_address, self.address.raw)

    @property
    def system_key(self) -> SystemKey:
        return (self.system_type, self.system_address)


@dataclass(frozen=True, slots=True)
class UitdSpec:
    """The UITD itself."""

    description: str = "firegate 模拟用户信息传输装置"  # type 26
    version: tuple[int, int] = (1, 0)  # type 25
    operator: int = 1  # 操作员编号 written in type 24 records (check-post answers)


@dataclass
class _Component:
    spec: ComponentSpec
    state: ComponentState
    since: TimeLabel
    analog: AnalogValue | None = None


@dataclass
class _System:
    spec: SystemSpec
    own: SystemState  # conditions of the system itself (power, bus)
    since: TimeLabel


@dataclass
class PanelModel:
    """State of the facility and the UITD. Every method takes the time label to write."""

    systems: Sequence[SystemSpec]
    components: Sequence[ComponentSpec]
    uitd: UitdSpec = field(default_factory=UitdSpec)
    normal_bit: bool = True
    _systems: dict[SystemKey, _System] = field(init=False, default_factory=dict)
    _components: dict[str, _Component] = field(init=False, default_factory=dict)
    _by_key: dict[ComponentKey, _Component] = field(init=False, default_factory=dict)
    uitd_own: UitdState = field(init=False, default=UitdState(0))
    link_fault: bool = field(init=False, default=False)
    facility_records: deque[FacilityOperationRecord] = field(
        init=False, default_factory=lambda: deque(maxlen=MAX_RECORDS))
    uitd_records: deque[UitdOperationRecord] = field(
        init=False, default_factory=lambda: deque(maxlen=MAX_RECORDS))

    def __post_init__(self) -> None:
        self.reset(TimeLabel(0, 0, 0, 1, 1, 0))

    def reset(self, now: TimeLabel) -> None:
        """Everything back to normal, records cleared (type 89, 初始化)."""
        zero_c = ComponentState.NORMAL if self.normal_bit else ComponentState(0)
        self._systems = {s.key: _System(s, SystemState(0), now) for s in self.systems}
        self._components = {}
        self._by_key = {}
        for spec in self.components:
            comp = _Component(spec, zero_c, now)
            if spec.analog_type is not None and spec.value is not None:
                comp.analog = AnalogValue.from_value(spec.system_type, spec.system_address,
                                                     spec.type, spec.address, spec.analog_type,
                                                     spec.value, now)
            self._components[spec.id] = comp
            self._by_key[spec.key] = comp
        self.uitd_own = UitdState(0)
        self.facility_records.clear()
        self.uitd_records.clear()

    # -- lookups ----------------------------------------------------------------------------

    def component(self, component_id: str) -> ComponentSpec:
        """The spec of a component by its scenario id (KeyError if unknown)."""
        return self._components[component_id].spec

    def component_state(self, component_id: str) -> ComponentState:
        """Current state word of a component."""
        return self._components[component_id].state

    def system_state(self, key: SystemKey) -> SystemState:
        """A system's state word: its own conditions plus its components' (图6)."""
        system = self._systems[key]
        word = int(system.own)
        if system.own & (SystemState.MAINS_POWER_FAULT | SystemState.BACKUP_POWER_FAULT
                         | SystemState.BUS_FAULT):
            word |= SystemState.FAULT
        for comp in self._components.values():
            if comp.spec.system_key == key:
                word |= int(comp.state & _AGGREGATED)
                if comp.state & ComponentState.POWER_FAULT:
                    word |= SystemState.FAULT
        if self.normal_bit:
            word |= SystemState.NORMAL
        return SystemState(word)

    @property
    def uitd_state(self) -> UitdState:
        """The UITD's running state (图13)."""
        word = self.uitd_own
        if any(c.state & ComponentState.FIRE_ALARM for c in self._components.values()):
            word |= UitdState.FIRE_ALARM
        if self.uitd_own & (UitdState.MAINS_POWER_FAULT | UitdState.BACKUP_POWER_FAULT):
            word |= UitdState.FAULT
        if self.link_fault:
            word |= UitdState.CENTRE_LINK_FAULT
        if self.normal_bit:
            word |= UitdState.NORMAL
        return word

    # -- changes, each returning the objects to upload --------------------------------------

    def set_component(self, component_id: str, bits: ComponentState, on: bool,
                      now: TimeLabel) -> ComponentStatus | None:
        """Set or clear condition bits; the type 2 object to upload, or None when nothing
        changed (a panel does not report a detector in alarm twice)."""
        comp = self._components[component_id]
        new = comp.state | bits if on else comp.state & ~bits
        if new == comp.state:
            return None
        comp.state, comp.since = ComponentState(new), now
        return self._status(comp, now)

    def restore_component(self, component_id: str, now: TimeLabel) -> ComponentStatus | None:
        """Clear every condition but a latched fire alarm."""
        return self.set_component(component_id, RESTORABLE, False, now)

    def set_analog(self, component_id: str, analog_type: int, value: float,
                   now: TimeLabel) -> AnalogValue:
        """A new measured value (type 3)."""
        comp = self._components[component_id]
        s = comp.spec
        comp.analog = AnalogValue.from_value(s.system_type, s.system_address, s.type,
                                             s.address, analog_type, value, now)
        return comp.analog

    def set_system(self, key: SystemKey, bits: SystemState, on: bool,
                   now: TimeLabel) -> SystemStatus | None:
        """Set or clear a system's own conditions (mains, backup, bus faults)."""
        system = self._systems[key]
        new = system.own | bits if on else system.own & ~bits
        if new == system.own:
            return None
        system.own, system.since = SystemState(new), now
        return SystemStatus(key[0], key[1], self.system_state(key), now)

    def set_uitd(self, bits: UitdState, on: bool) -> bool:
        """Set or clear the UITD's own conditions; True when the state changed."""
        new = UitdState(self.uitd_own | bits if on else self.uitd_own & ~bits)
        changed = new != self.uitd_own
        self.uitd_own = new
        return changed

    def operate(self, key: SystemKey, operation: FacilityOperation, operator: int,
                now: TimeLabel) -> FacilityOperationRecord:
        """An operator action at the facility (图9); a reset clears latched conditions."""
        record = FacilityOperationRecord(key[0], key[1], operation, operator, now)
        self.facility_records.append(record)
        if operation & FacilityOperation.RESET:
            for comp in self._components.values():
                if comp.spec.system_key == key and comp.state & RESET_CLEARS:
                    comp.state, comp.since = ComponentState(comp.state & ~RESET_CLEARS), now
            self._systems[key].since = now
        return record

    def uitd_operate(self, operation: UitdOperation, now: TimeLabel) -> UitdOperationRecord:
        """An operator action at the UITD (图14), e.g. the check-post answer (bit 5)."""
        record = UitdOperationRecord(operation, self.uitd.operator, now)
        self.uitd_records.append(record)
        return record

    def system_status(self, key: SystemKey, now: TimeLabel | None = None) -> SystemStatus:
        """The type 1 object of a system (time = when its state last changed, or ``now``)."""
        system = self._systems[key]
        return SystemStatus(key[0], key[1], self.system_state(key), now or system.since)

    def all_systems(self) -> list[SystemKey]:
        return list(self._systems)

    def uitd_status(self, now: TimeLabel) -> UitdStatus:
        return UitdStatus(self.uitd_state, now)

    def _status(self, comp: _Component, time: TimeLabel) -> ComponentStatus:
        s = comp.spec
        return ComponentStatus(s.system_type, s.system_address, s.type, s.address, comp.state,
                               s.description, time)

    # -- answers to the centre's reads (§8.3.2), each a list of objects ---------------------

    def read_systems(self, refs: Iterable[SystemKey]) -> list[SystemStatus]:
        """Type 61 -> 1. Unknown systems are left out."""
        return [self.system_status(k) for k in refs if k in self._systems]

    def read_components(self, refs: Iterable[ComponentKey]) -> list[ComponentStatus]:
        """Type 62 -> 2."""
        return [self._status(c, c.since) for c in map(self._by_key.get, refs) if c is not None]

    def read_analogs(self, refs: Iterable[ComponentKey]) -> list[AnalogValue]:
        """Type 63 -> 3; components that measure nothing are left out."""
        out = []
        for ref in refs:
            comp = self._by_key.get(ref)
            if comp is not None and comp.analog is not None:
                out.append(comp.analog)
        return out

    def read_operations(self, key: SystemKey, count: int,
                        start: TimeLabel) -> list[FacilityOperationRecord]:
        """Type 64 -> 4: up to ``count`` records of a system from ``start`` on."""
        since = start.to_datetime()
        return _first((r for r in self.facility_records
                       if (r.system_type, r.system_address) == key
                       and _not_before(r.time, since)), count)

    def read_uitd_operations(self, count: int, start: TimeLabel) -> list[UitdOperationRecord]:
        """Type 84 -> 24."""
        since = start.to_datetime()
        return _first((r for r in self.uitd_records if _not_before(r.time, since)), count)

    def read_versions(self, refs: Iterable[SystemKey]) -> list[FacilitySoftwareVersion]:
        """Type 65 -> 5."""
        return [FacilitySoftwareVersion(k[0], k[1], *self._systems[k].spec.version)
                for k in refs if k in self._systems]

    def read_configs(self, refs: Iterable[SystemKey]) -> list[FacilityConfig]:
        """Type 66 -> 6."""
        return [FacilityConfig(k[0], k[1], self._systems[k].spec.description)
                for k in refs if k in self._systems]

    def read_component_configs(self, refs: Iterable[ComponentKey]) -> list[ComponentConfig]:
        """Type 67 -> 7."""
        out = []
        for comp in map(self._by_key.get, refs):
            if comp is not None:
                s = comp.spec
                out.append(ComponentConfig(s.system_type, s.system_address, s.type, s.address,
                                           s.description))
        return out

    def read_times(self, refs: Iterable[SystemKey], clock: TimeLabel) -> list[FacilityTime]:
        """Type 68 -> 8: the facility's clock (the simulated facility shares the UITD's)."""
        return [FacilityTime(k[0], k[1], clock) for k in refs if k in self._systems]

    def read_uitd_version(self) -> UitdSoftwareVersion:
        """Type 85 -> 25."""
        return UitdSoftwareVersion(*self.uitd.version)

    def read_uitd_config(self) -> UitdConfig:
        """Type 86 -> 26."""
        return UitdConfig(self.uitd.description)

    @staticmethod
    def read_uitd_time(clock: TimeLabel) -> UitdTime:
        """Type 88 -> 28."""
        return UitdTime(clock)


def _not_before(time: TimeLabel | None, since: datetime | None) -> bool:
    if since is None or time is None:  # an impossible start label (all zeros): everything
        return True
    at = time.to_datetime()
    return at is None or at >= since


def _first(items: Iterable[_T], count: int) -> list[_T]:
    out: list[_T] = []
    for item in items:
        if len(out) >= count:
            break
        out.append(item)
    return out
