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

from .actions import (
    ACTIONS,
    CHANNEL_STATES,
    CONTACT_ACTIONS,
    EXCEPTION_CODES,
    PUMP_ACTIONS,
    Action,
    ActionSpec,
    AutoStart,
    TimelineEvent,
    contact_names,
    contact_states,
)
from .contacts import Contact

__all__ = [  # the actions are re-exported: scenarios, the server and tests import them here
    "ACTIONS", "CHANNEL_STATES", "EXCEPTION_CODES", "Action", "ActionSpec", "Approach",
    "AutoStart", "BusModel", "Clock", "DeviceModel", "ManualClock", "Ramp", "Reading",
    "ScaledClock", "Signal", "TimelineEvent", "contact_names", "contact_states",
]

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
        if not points:  # a fan or pump controller with contacts only
            return
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
        if a in CONTACT_ACTIONS:
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
        if ev.action in PUMP_ACTIONS and link is not None and link.source != device.id:
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
