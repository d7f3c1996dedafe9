"""The simulated field devices: their physical state, its dynamics and their faults. No I/O.

Values are functions of scenario time, evaluated when asked. Each point's value is a
:class:`Signal` (a value at a reference time plus a motion: hold, ramp towards a limit, or an
exponential approach to a target). A scenario event rebases the signals at the event's own time and
changes their motion, so what a client reads depends only on the clock, not on how often anything
ran. With a :class:`ManualClock` the tests step through a minutes-long scenario without sleeping.

All state is kept in each quantity's canonical unit (MPa, m, °C, mA, see
``protocols.registers.CANONICAL_UNIT``); a reading converts to each point's own unit.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from protocols.registers import (
    CANONICAL_UNIT,
    BitPoint,
    DeviceProfile,
    Meaning,
    PointSpec,
    Quantity,
    convert,
)

from .contacts import Contact

# Factory alarm settings of the simulated electrical fire detector. GB 14287.2 lets the residual
# current alarm be set within 20-1000 mA; 300 mA is a common factory default. Cable temperature
# alarms are commonly set around 70-80 °C.
RESIDUAL_CURRENT_ALARM_MA = 300.0
TEMPERATURE_ALARM_C = 80.0

# One standard deviation of read noise per quantity, in canonical units, at noise scale 1.0.
NOISE_SIGMA: Mapping[Quantity, float] = {
    Quantity.PRESSURE: 0.002,
    Quantity.LEVEL: 0.002,
    Quantity.TEMPERATURE: 0.05,
    Quantity.RESIDUAL_CURRENT: 0.3,
}
# Default starting values, canonical units.
DEFAULT_INITIAL: Mapping[Quantity, float] = {
    Quantity.PRESSURE: 0.35,
    Quantity.LEVEL: 3.0,
    Quantity.TEMPERATURE: 30.0,
    Quantity.RESIDUAL_CURRENT: 20.0,
}


class Clock(Protocol):
    """Scenario time in seconds since the scenario started."""

    def now(self) -> float:
        """Current scenario time."""
        ...


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        """Current scenario time."""
        return self._t

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds``; returns the new time."""
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._t += seconds
        return self._t


class ScaledClock:
    """Wall-clock time since creation, multiplied by ``speed`` (``speed=10``: 10 s per second)."""

    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._start = time.monotonic()

    def now(self) -> float:
        """Current scenario time."""
        return (time.monotonic() - self._start) * self.speed


# --- signals ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Ramp:
    """Move at ``rate`` per second towards ``limit`` and stop there (rate 0: hold)."""

    rate: float = 0.0
    limit: float = 0.0


@dataclass(frozen=True, slots=True)
class Approach:
    """First-order approach to ``target`` with time constant ``tau`` seconds."""

    target: float
    tau: float


Motion = Ramp | Approach
HOLD = Ramp()


@dataclass(slots=True)
class Signal:
    """A value known at time ``t0`` and how it moves after that."""

    value: float
    t0: float = 0.0
    motion: Motion = HOLD

    def at(self, t: float) -> float:
        """The value at time ``t`` (never before ``t0``)."""
        dt = max(0.0, t - self.t0)
        m = self.motion
        if isinstance(m, Approach):
            return m.target + (self.value - m.target) * math.exp(-dt / m.tau)
        if m.rate == 0.0:
            return self.value
        step = abs(m.rate) * dt
        if m.limit >= self.value:
            return min(m.limit, self.value + step)
        return max(m.limit, self.value - step)

    def move(self, t: float, motion: Motion) -> None:
        """From time ``t`` on, follow ``motion``."""
        self.value = self.at(t)
        self.t0 = t
        self.motion = motion

    def first_at_or_below(self, bound: float, since: float) -> float | None:
        """The first time ``>= since`` at which the value is at or below ``bound`` with its
        present motion (exact, not sampled); None if it never gets there (a ramp that stops
        above it, an approach to a target at or above it)."""
        start = max(since, self.t0)
        if self.at(start) <= bound:
            return start
        m = self.motion
        if isinstance(m, Approach):
            if m.target >= bound:
                return None
            # target + (value - target) * exp(-dt / tau) = bound
            dt = m.tau * math.log((self.value - m.target) / (bound - m.target))
        else:
            if m.rate == 0.0 or m.limit > bound:
                return None
            dt = (self.value - bound) / abs(m.rate)
        return max(start, self.t0 + dt)


# --- actions ---------------------------------------------------------------------------------

class Action(StrEnum):
    """What a scenario event does to a device."""

    HYDRANT_OPEN = "hydrant_open"
    HYDRANT_CLOSE = "hydrant_close"
    PUMP_START = "pump_start"
    PUMP_STOP = "pump_stop"
    DRAIN = "drain"
    REFILL = "refill"
    LEAK_CREEP = "leak_creep"
    OVERHEAT = "overheat"
    HOLD = "hold"
    SET = "set"
    SILENCE = "silence"
    EXCEPTION = "exception"
    OUT_OF_RANGE = "out_of_range"
    SENSOR_FAULT = "sensor_fault"
    RESTORE = "restore"
    # contacts (coils, discrete inputs, bits of a register)
    CONTACT = "contact"
    VALVE_CLOSE = "valve_close"
    VALVE_OPEN = "valve_open"
    PUMP_FAULT = "pump_fault"
    MANUAL = "manual"
    AUTO = "auto"


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """Which devices an action applies to, which parameters it takes, and their defaults."""

    quantity: Quantity | None  # the device needs a point of this quantity; None: any device
    params: Mapping[str, float | None]  # allowed parameters -> default (None: none / required)
    required: frozenset[str] = frozenset()
    summary: str = ""
    meaning: Meaning | None = None  # the device needs a contact of this meaning
    # (with a quantity too: either will do; pump_start moves a pressure, a run contact, or both)
    measures: bool = False  # the device needs a measured point (``set`` on a contacts module)

    def unfit(self, action: Action, profile: DeviceProfile, device: int) -> str | None:
        """Why ``action`` cannot apply to a device of ``profile``; None if it can."""
        has_q = self.quantity is not None and bool(profile.points_of(self.quantity))
        has_m = self.meaning is not None and any(b.meaning is self.meaning
                                                 for b in profile.bit_points)
        if self.quantity is not None or self.meaning is not None:
            if has_q or has_m:
                return None
            wanted = " or ".join(
                ([f"measuring {self.quantity}"] if self.quantity is not None else [])
                + ([f"with a {self.meaning} contact"] if self.meaning is not None else []))
            return f"{action} needs a device {wanted}; device {device} is a {profile.key}"
        if self.measures and not profile.points:
            return (f"{action} needs a measured point; device {device} is a {profile.key}, "
                    f"which has contacts only")
        if action is Action.CONTACT and not contact_names(profile):
            return f"{action} needs a device with contacts; device {device} is a {profile.key}"
        return None


_BOUNCE: Mapping[str, float | None] = {"bounce": 0, "bounce_s": 0.2}
# Parameters: ``to``/``value`` in canonical units (MPa, m, °C, mA), ``rate`` in those per second,
# ``tau`` in seconds, ``code`` a Modbus exception code, ``point`` a point name of the profile
# (a contact's name for contact actions), ``state`` a contact's state name, ``bounce`` how many
# times a changing contact bounces back (0: none) and ``bounce_s`` how long each bounce lasts.
ACTIONS: Mapping[Action, ActionSpec] = {
    Action.HYDRANT_OPEN: ActionSpec(Quantity.PRESSURE, {"to": 0.05, "tau": 1.5},
                                    summary="pressure falls towards `to` (hydrant flowing)"),
    Action.HYDRANT_CLOSE: ActionSpec(Quantity.PRESSURE, {"tau": 1.5},
                                     summary="pressure returns to the static pressure"),
    Action.PUMP_START: ActionSpec(Quantity.PRESSURE, {"to": 0.65, "tau": 3.0},
                                  summary="pressure rises towards `to` (fire pump running); a "
                                          "pump controller's run contact closes",
                                  meaning=Meaning.RUN),
    Action.PUMP_STOP: ActionSpec(Quantity.PRESSURE, {"tau": 3.0},
                                 summary="pump off: back to open-hydrant or static pressure; "
                                         "the run contact opens", meaning=Meaning.RUN),
    Action.DRAIN: ActionSpec(Quantity.LEVEL, {"rate": 0.01, "to": 0.0},
                             summary="level falls at `rate` m/s down to `to`"),
    Action.REFILL: ActionSpec(Quantity.LEVEL, {"rate": 0.02, "to": None},
                              summary="level rises at `rate` m/s up to `to` (default: initial)"),
    Action.LEAK_CREEP: ActionSpec(Quantity.RESIDUAL_CURRENT, {"rate": 5.0, "to": None},
                                  summary="residual current rises at `rate` mA/s up to `to` "
                                          "(default: the point's maximum)"),
    Action.OVERHEAT: ActionSpec(Quantity.TEMPERATURE, {"point": None, "rate": 0.5, "to": 120.0},
                                summary="a cable temperature (default: the first) rises at "
                                        "`rate` °C/s up to `to`"),
    Action.HOLD: ActionSpec(None, {"point": None},
                            summary="freeze a point (default: all) at its current value",
                            measures=True),
    Action.SET: ActionSpec(None, {"point": None, "value": None}, frozenset({"value"}),
                           summary="set a point (default: the primary) to `value` at once",
                           measures=True),
    Action.SILENCE: ActionSpec(None, {}, summary="the device stops answering (timeout)"),
    Action.EXCEPTION: ActionSpec(None, {"code": 4},
                                 summary="every request gets exception response `code`"),
    Action.OUT_OF_RANGE: ActionSpec(None, {"point": None, "value": None},
                                    summary="a point (default: primary) reads `value`, by "
                                            "default 1.5 spans above its range", measures=True),
    Action.SENSOR_FAULT: ActionSpec(None, {}, summary="set the profile's fault status bits"),
    Action.RESTORE: ActionSpec(None, {}, summary="clear silence, exception, out_of_range and "
                                                 "sensor_fault"),
    Action.CONTACT: ActionSpec(None, {"point": None, "state": None, **_BOUNCE},
                               frozenset({"point", "state"}),
                               summary="a contact (`point`) goes to `state`: one of its "
                                       "meaning's states, `open`/`closed` on a DI module"),
    Action.VALVE_CLOSE: ActionSpec(None, {"point": None, **_BOUNCE}, meaning=Meaning.VALVE,
                                   summary="a supply valve (default: the first) is closed"),
    Action.VALVE_OPEN: ActionSpec(None, {"point": None, **_BOUNCE}, meaning=Meaning.VALVE,
                                  summary="a supply valve (default: the first) is opened"),
    Action.PUMP_FAULT: ActionSpec(None, {**_BOUNCE}, meaning=Meaning.FAULT,
                                  summary="the pump trips: fault contact closes, run opens, "
                                          "the pressure it made falls away"),
    Action.MANUAL: ActionSpec(None, {**_BOUNCE}, meaning=Meaning.MANUAL,
                              summary="the controller's selector is turned to manual (no "
                                      "automatic start)"),
    Action.AUTO: ActionSpec(None, {**_BOUNCE}, meaning=Meaning.MANUAL,
                            summary="the selector is turned back to auto"),
}

#: Exception codes a device can be told to answer (Modbus V1.1b3 §7).
EXCEPTION_CODES = (1, 2, 3, 4, 5, 6, 8, 10, 11)
_CONTACT_ACTIONS = frozenset({Action.CONTACT, Action.VALVE_CLOSE, Action.VALVE_OPEN,
                              Action.PUMP_FAULT, Action.MANUAL, Action.AUTO})
_PUMP_ACTIONS = frozenset({Action.PUMP_START, Action.PUMP_STOP, Action.PUMP_FAULT})
#: State names of a generic module's input (``ch<n>``), which means nothing until the installer
#: gives it a meaning in the gateway's config: the contact itself, ``closed`` = 1 on the wire.
CHANNEL_STATES = ("open", "closed")


def contact_names(profile: DeviceProfile) -> list[str]:
    """Every contact of a device: the profile's contacts, then ``ch<n>`` for each input of its
    channel bank (the name ``DeviceProfile.with_channels`` gives an assigned one)."""
    names = [b.name for b in profile.bit_points]
    if profile.bank is not None:
        names += [f"ch{n}" for n in range(1, profile.bank.count + 1) if f"ch{n}" not in names]
    return names


def contact_states(profile: DeviceProfile, name: str) -> tuple[str, str]:
    """The names of a contact's two states, for a 0 and a 1 of its logical state: its
    meaning's (``closed``/``open`` for a valve, ``stopped``/``running``...) or, for an input of
    a channel bank, :data:`CHANNEL_STATES` of the raw contact."""
    for b in profile.bit_points:
        if b.name == name:
            return b.spec.states
    if name in contact_names(profile):
        return CHANNEL_STATES
    raise KeyError(f"{profile.key} has no contact {name!r}; contacts: "
                   f"{', '.join(contact_names(profile)) or 'none'}")


@dataclass(frozen=True, slots=True)
class AutoStart:
    """A pump controller's pressure switch: the pump starts by itself when the pressure of
    device ``source`` (its ``point``, default its first pressure point) falls to ``below`` MPa,
    unless it runs already, has tripped (fault) or is switched to manual."""

    source: int
    below: float
    point: str | None = None


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """A timeline entry: at scenario time ``at``, do ``action`` to device ``device``."""

    at: float
    device: int
    action: Action
    params: Mapping[str, float | str] = field(default_factory=dict)

    def param(self, name: str) -> float | str | None:
        """The given value of parameter ``name``, else the action's default."""
        return self.params.get(name, ACTIONS[self.action].params.get(name))

    def number(self, name: str) -> float | None:
        """A numeric parameter (given or default)."""
        v = self.param(name)
        return None if v is None or isinstance(v, str) else float(v)

    def __str__(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.params.items())
        return f"t={self.at:g} device {self.device}: {self.action}{extra}"


# --- devices ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reading:
    """What a device reports at one instant: values in each point's unit, and status flags."""

    values: Mapping[str, float]
    status: Mapping[str, frozenset[str]]
    contacts: Mapping[str, bool] = field(default_factory=dict)  # raw bit of each contact


class DeviceModel:
    """One simulated field device: a profile, its signals and its fault state."""

    def __init__(self, device_id: int, profile: DeviceProfile, name: str = "",
                 initial: Mapping[str, float] | None = None, *, noise: float = 1.0,
                 seed: int | None = None, contacts: Mapping[str, str] | None = None,
                 auto_start: AutoStart | None = None) -> None:
        self.id = device_id
        self.profile = profile
        self.name = name or f"{profile.key}-{device_id}"
        self.noise = noise
        self._rng = random.Random(seed)
        given = dict(initial or {})
        unknown = set(given) - {p.name for p in profile.points}
        if unknown:
            raise KeyError(f"{profile.key} has no point {sorted(unknown)[0]!r}")
        self.initial = {p.name: given.get(p.name, DEFAULT_INITIAL[p.quantity])
                        for p in profile.points}
        self.signals = {n: Signal(v) for n, v in self.initial.items()}
        # pressure system state: the target follows from which of hydrant / pump is active
        self.hydrant_open = False
        self.pump_on = False
        self.open_pressure = ACTIONS[Action.HYDRANT_OPEN].params["to"] or 0.0
        self.pump_pressure = ACTIONS[Action.PUMP_START].params["to"] or 0.0
        # contacts: the raw bit of each, as on the wire; a profile's contacts start in their
        # normal state (valve open, pump stopped, no fault, auto), a module's inputs open
        self.bit_points: dict[str, BitPoint] = {b.name: b for b in profile.bit_points}
        self.contacts: dict[str, Contact] = {}
        for contact in contact_names(profile):
            b = self.bit_points.get(contact)
            self.contacts[contact] = Contact(False if b is None else b.raw(b.normal_state))
        for contact, state in (contacts or {}).items():
            self.contacts[contact] = Contact(self._raw_of(contact, state))
        self.auto_start = auto_start
        # faults
        self.silenced = False
        self.exception_code: int | None = None
        self.sensor_fault = False
        self.out_of_range: dict[str, float] = {}  # point -> value in the point's unit

    def _points(self, quantity: Quantity | None, point: float | str | None) -> list[PointSpec]:
        if isinstance(point, str):
            return [self.profile.point(point)]
        if quantity is None:
            return list(self.profile.points)
        return list(self.profile.points_of(quantity))

    def _pressure_target(self) -> float:
        if self.pump_on:
            return self.pump_pressure
        if self.hydrant_open:
            return self.open_pressure
        return self.initial[self.profile.points_of(Quantity.PRESSURE)[0].name]

    # -- contacts ---------------------------------------------------------------------------

    def _raw_of(self, name: str, state: str) -> bool:
        """The raw bit of contact ``name`` in the state called ``state``."""
        states = contact_states(self.profile, name)
        if state not in states:
            raise ValueError(f"contact {name} is {' or '.join(states)}, not {state!r}")
        b = self.bit_points.get(name)
        logical = bool(states.index(state))
        return logical if b is None else b.raw(logical)

    def state(self, name: str, t: float) -> str:
        """The state name of contact ``name`` at ``t`` (bounce included)."""
        raw = self.contacts[name].at(t)
        b = self.bit_points.get(name)
        return contact_states(self.profile, name)[int(raw if b is None else b.state(raw))]

    def _of(self, meaning: Meaning) -> list[BitPoint]:
        return [b for b in self.profile.bit_points if b.meaning is meaning]

    def settled(self, meaning: Meaning) -> bool:
        """Whether the (first) contact of ``meaning`` is, once settled, in its logical 1 state
        (valve open, running, fault, manual); False if the device has none."""
        found = self._of(meaning)
        return bool(found) and found[0].state(self.contacts[found[0].name].on)

    def _set(self, b: BitPoint, logical: bool, event: TimelineEvent) -> None:
        bounce_s = event.number("bounce_s") or 0.0
        self.contacts[b.name].set(event.at, b.raw(logical), int(event.number("bounce") or 0),
                                  bounce_s)

    def _apply_contact(self, event: TimelineEvent) -> None:
        a, t = event.action, event.at
        if a is Action.CONTACT:
            name, state = str(event.param("point")), str(event.param("state"))
            self.contacts[name].set(t, self._raw_of(name, state),
                                    int(event.number("bounce") or 0),
                                    event.number("bounce_s") or 0.0)
        elif a in (Action.VALVE_CLOSE, Action.VALVE_OPEN):
            point = event.param("point")
            b = self.bit_points[point] if isinstance(point, str) else self._of(Meaning.VALVE)[0]
            self._set(b, a is Action.VALVE_OPEN, event)
        elif a in (Action.MANUAL, Action.AUTO):
            self._set(self._of(Meaning.MANUAL)[0], a is Action.MANUAL, event)
        else:  # PUMP_FAULT: the fault relay closes, the pump stops, its pressure falls away
            self._set(self._of(Meaning.FAULT)[0], True, event)
            self._pump(TimelineEvent(t, self.id, Action.PUMP_STOP))

    def _pump(self, event: TimelineEvent) -> None:
        """A pump starts or stops: the run contact follows, and the pressure this device
        measures moves (a pump controller's outlet pressure only, not its suction)."""
        a, t = event.action, event.at
        if a is Action.PUMP_START:
            self.pump_on, self.pump_pressure = True, event.number("to") or 0.0
        else:
            self.pump_on = False
        for b in self._of(Meaning.RUN)[:1]:
            self._set(b, a is Action.PUMP_START, event)
        points = list(self.profile.points_of(Quantity.PRESSURE))
        if self._of(Meaning.RUN):
            points = points[:1]
        motion: Motion = Approach(self._pressure_target(), event.number("tau") or 1.0)
        for p in points:
            self.signals[p.name].move(t, motion)

    # -- events -----------------------------------------------------------------------------

    def apply(self, event: TimelineEvent) -> None:
        """Carry out ``event`` at its own time ``event.at``."""
        a, t = event.action, event.at
        spec = ACTIONS[a]
        why = spec.unfit(a, self.profile, self.id)
        if why is not None:
            raise ValueError(why)
        if a in _CONTACT_ACTIONS:
            self._apply_contact(event)
            return
        if a in (Action.PUMP_START, Action.PUMP_STOP):
            self._pump(event)
            return
        points = self._points(spec.quantity, event.param("point"))
        if a in (Action.HYDRANT_OPEN, Action.HYDRANT_CLOSE):
            if self._of(Meaning.RUN):  # a pump controller: its outlet sees the network
                points = points[:1]
            if a is Action.HYDRANT_OPEN:
                self.hydrant_open, self.open_pressure = True, event.number("to") or 0.0
            else:
                self.hydrant_open = False
            motion: Motion = Approach(self._pressure_target(), event.number("tau") or 1.0)
            for p in points:
                self.signals[p.name].move(t, motion)
        elif a in (Action.DRAIN, Action.REFILL, Action.LEAK_CREEP, Action.OVERHEAT):
            if a is Action.OVERHEAT and event.param("point") is None:
                points = points[:1]
            for p in points:
                to = event.number("to")
                if to is None:
                    to = (self.initial[p.name] if a is Action.REFILL
                          else convert(p.maximum, p.unit, p.canonical_unit))
                self.signals[p.name].move(t, Ramp(event.number("rate") or 0.0, to))
        elif a is Action.HOLD:
            for p in points:
                self.signals[p.name].move(t, HOLD)
        elif a is Action.SET:
            point = event.param("point")
            target = self.profile.point(point) if isinstance(point, str) else self.profile.primary
            self.signals[target.name] = Signal(event.number("value") or 0.0, t)
        else:
            self._apply_fault(event)

    def _apply_fault(self, event: TimelineEvent) -> None:
        a = event.action
        if a is Action.SILENCE:
            self.silenced = True
        elif a is Action.EXCEPTION:
            self.exception_code = int(event.number("code") or 4)
        elif a is Action.SENSOR_FAULT:
            self.sensor_fault = True
        elif a is Action.OUT_OF_RANGE:
            point = event.param("point")
            p = self.profile.point(point) if isinstance(point, str) else self.profile.primary
            value = event.number("value")
            self.out_of_range[p.name] = (
                p.maximum + 1.5 * (p.maximum - p.minimum) if value is None
                else convert(value, p.canonical_unit, p.unit))
        elif a is Action.RESTORE:
            self.silenced, self.exception_code, self.sensor_fault = False, None, False
            self.out_of_range.clear()

    def value(self, name: str, t: float) -> float:
        """The true value of point ``name`` at ``t`` in its canonical unit (no noise, no fault)."""
        return self.signals[name].at(t)

    def reading(self, t: float) -> Reading:
        """What the device reports at time ``t``: noisy values, out-of-range overrides, status."""
        values: dict[str, float] = {}
        for p in self.profile.points:
            v = self.signals[p.name].at(t)
            if self.noise:
                v += self._rng.gauss(0.0, NOISE_SIGMA[p.quantity] * self.noise)
            if p.quantity is not Quantity.TEMPERATURE:
                v = max(0.0, v)  # pressure, level and current do not go negative
            values[p.name] = convert(v, CANONICAL_UNIT[p.quantity], p.unit)
        values.update(self.out_of_range)
        status = {w.name: frozenset(n for n in w.bits.values() if self._flag(n, values))
                  for w in self.profile.status_words}
        return Reading(values, status, {n: c.at(t) for n, c in self.contacts.items()})

    def _flag(self, bit: str, values: Mapping[str, float]) -> bool:
        """The simulated device's rule for one named status bit (unknown names stay clear)."""
        if bit in ("sensor_fault", "loop_open", "residual_current_fault", "temperature_fault"):
            return self.sensor_fault
        if bit == "over_range":
            p = self.profile.primary
            return values[p.name] > p.maximum
        if bit == "residual_current_alarm":
            return any(values[p.name] >= RESIDUAL_CURRENT_ALARM_MA
                       for p in self.profile.points_of(Quantity.RESIDUAL_CURRENT))
        if bit == "temperature_alarm":
            return any(values[p.name] >= TEMPERATURE_ALARM_C
                       for p in self.profile.points_of(Quantity.TEMPERATURE))
        return False


class BusModel:
    """The devices on one bus plus the scenario timeline, driven by one clock."""

    def __init__(self, devices: Iterable[DeviceModel], events: Sequence[TimelineEvent] = (),
                 clock: Clock | None = None) -> None:
        self.devices = {d.id: d for d in devices}
        self.clock: Clock = clock or ManualClock()
        # stable sort: events at the same time keep their file order
        self._pending = sorted(events, key=lambda e: e.at)
        self._next = 0
        self._since = 0.0  # automatic starts are looked for from the last event applied on
        #: called with each event as it is applied, whoever caused it (a request or a tick)
        self.on_event: Callable[[TimelineEvent], None] | None = None

    def advance(self) -> list[TimelineEvent]:
        """Apply every event due by now, and the automatic pump starts that happen in
        between (each at the exact time its pressure switch trips); returns them all."""
        now = self.clock.now()
        done: list[TimelineEvent] = []
        while True:
            nxt = self._pending[self._next] if self._next < len(self._pending) else None
            auto = self._auto_start(now if nxt is None else min(now, nxt.at))
            if auto is not None:
                self._apply(auto, done)
            elif nxt is not None and nxt.at <= now:
                self._next += 1
                self._apply(nxt, done)
            else:
                return done

    def _apply(self, ev: TimelineEvent, done: list[TimelineEvent]) -> None:
        device = self.devices[ev.device]
        device.apply(ev)
        self._since = max(self._since, ev.at)
        done.append(ev)
        if self.on_event is not None:
            self.on_event(ev)
        link = device.auto_start
        if ev.action in _PUMP_ACTIONS and link is not None and link.source != device.id:
            # the pump feeds the network its pressure switch watches: that pressure follows
            action = Action.PUMP_START if ev.action is Action.PUMP_START else Action.PUMP_STOP
            params = {k: v for k, v in ev.params.items() if k in ("to", "tau")}
            self._apply(TimelineEvent(ev.at, link.source, action, params), done)

    def _auto_start(self, until: float) -> TimelineEvent | None:
        """The earliest automatic pump start at or before ``until``, if any."""
        first: TimelineEvent | None = None
        for d in self.devices.values():
            link = d.auto_start
            if (link is None or d.settled(Meaning.RUN) or d.settled(Meaning.FAULT)
                    or d.settled(Meaning.MANUAL)):
                continue
            source = self.devices[link.source]
            point = link.point or source.profile.points_of(Quantity.PRESSURE)[0].name
            t = source.signals[point].first_at_or_below(link.below, self._since)
            if t is not None and t <= until and (first is None or t < first.at):
                first = TimelineEvent(t, d.id, Action.PUMP_START, {"by": "pressure switch"})
        return first

    @property
    def pending(self) -> int:
        """Number of events not yet applied."""
        return len(self._pending) - self._next

    def trigger(self, device: int, action: Action, **params: float | str) -> TimelineEvent:
        """Apply an action now (interactive use and tests)."""
        self.advance()
        ev = TimelineEvent(self.clock.now(), device, action, params)
        self._apply(ev, [])
        return ev
