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

from protocols.registers import CANONICAL_UNIT, DeviceProfile, PointSpec, Quantity, convert

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


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """Which devices an action applies to, which parameters it takes, and their defaults."""

    quantity: Quantity | None  # the device needs a point of this quantity; None: any device
    params: Mapping[str, float | None]  # allowed parameters -> default (None: none / required)
    required: frozenset[str] = frozenset()
    summary: str = ""


# Parameters: ``to``/``value`` in canonical units (MPa, m, °C, mA), ``rate`` in those per second,
# ``tau`` in seconds, ``code`` a Modbus exception code, ``point`` a point name of the profile.
ACTIONS: Mapping[Action, ActionSpec] = {
    Action.HYDRANT_OPEN: ActionSpec(Quantity.PRESSURE, {"to": 0.05, "tau": 1.5},
                                    summary="pressure falls towards `to` (hydrant flowing)"),
    Action.HYDRANT_CLOSE: ActionSpec(Quantity.PRESSURE, {"tau": 1.5},
                                     summary="pressure returns to the static pressure"),
    Action.PUMP_START: ActionSpec(Quantity.PRESSURE, {"to": 0.65, "tau": 3.0},
                                  summary="pressure rises towards `to` (fire pump running)"),
    Action.PUMP_STOP: ActionSpec(Quantity.PRESSURE, {"tau": 3.0},
                                 summary="pump off: back to open-hydrant or static pressure"),
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
                            summary="freeze a point (default: all) at its current value"),
    Action.SET: ActionSpec(None, {"point": None, "value": None}, frozenset({"value"}),
                           summary="set a point (default: the primary) to `value` at once"),
    Action.SILENCE: ActionSpec(None, {}, summary="the device stops answering (timeout)"),
    Action.EXCEPTION: ActionSpec(None, {"code": 4},
                                 summary="every request gets exception response `code`"),
    Action.OUT_OF_RANGE: ActionSpec(None, {"point": None, "value": None},
                                    summary="a point (default: primary) reads `value`, by "
                                            "default 1.5 spans above its range"),
    Action.SENSOR_FAULT: ActionSpec(None, {}, summary="set the profile's fault status bits"),
    Action.RESTORE: ActionSpec(None, {}, summary="clear silence, exception, out_of_range and "
                                                 "sensor_fault"),
}

#: Exception codes a device can be told to answer (Modbus V1.1b3 §7).
EXCEPTION_CODES = (1, 2, 3, 4, 5, 6, 8, 10, 11)


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


class DeviceModel:
    """One simulated field device: a profile, its signals and its fault state."""

    def __init__(self, device_id: int, profile: DeviceProfile, name: str = "",
                 initial: Mapping[str, float] | None = None, *, noise: float = 1.0,
                 seed: int | None = None) -> None:
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

    def apply(self, event: TimelineEvent) -> None:
        """Carry out ``event`` at its own time ``event.at``."""
        a, t = event.action, event.at
        spec = ACTIONS[a]
        if spec.quantity is not None and not self.profile.points_of(spec.quantity):
            raise ValueError(f"{a} needs a device measuring {spec.quantity}; "
                             f"device {self.id} is a {self.profile.key}")
        points = self._points(spec.quantity, event.param("point"))
        if a in (Action.HYDRANT_OPEN, Action.HYDRANT_CLOSE, Action.PUMP_START, Action.PUMP_STOP):
            if a is Action.HYDRANT_OPEN:
                self.hydrant_open, self.open_pressure = True, event.number("to") or 0.0
            elif a is Action.HYDRANT_CLOSE:
                self.hydrant_open = False
            elif a is Action.PUMP_START:
                self.pump_on, self.pump_pressure = True, event.number("to") or 0.0
            else:
                self.pump_on = False
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
        return Reading(values, status)

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
        #: called with each event as it is applied, whoever caused it (a request or a tick)
        self.on_event: Callable[[TimelineEvent], None] | None = None

    def advance(self) -> list[TimelineEvent]:
        """Apply every event due by now; returns the events applied."""
        now = self.clock.now()
        done: list[TimelineEvent] = []
        while self._next < len(self._pending) and self._pending[self._next].at <= now:
            ev = self._pending[self._next]
            self.devices[ev.device].apply(ev)
            done.append(ev)
            self._next += 1
            if self.on_event is not None:
                self.on_event(ev)
        return done

    @property
    def pending(self) -> int:
        """Number of events not yet applied."""
        return len(self._pending) - self._next

    def trigger(self, device: int, action: Action, **params: float | str) -> TimelineEvent:
        """Apply an action now (interactive use and tests)."""
        self.advance()
        ev = TimelineEvent(self.clock.now(), device, action, params)
        self.devices[device].apply(ev)
        if self.on_event is not None:
            self.on_event(ev)
        return ev
