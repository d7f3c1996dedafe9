"""Simulated BTHome sensors and their timeline, without I/O.

:class:`Simulation` is a pure scheduler: fed the simulated time, it applies the scenario's events
and returns the advertisements that are due. The asyncio shell (:mod:`simulators.ble.runner`)
maps wall-clock time to simulated time (``--speed``) and hands the adverts to the mocked BlueZ.

Behaviour copied from real BTHome sensors:

* each sensor advertises every ``interval`` seconds, and at once when its state changes
  (door opened, smoke detected, button pressed), as trigger-capable devices do;
* every advert carries a new packet id (object 0x00, wraps at 256) and, when a bind key is
  set, a new encryption counter;
* a *silenced* sensor sends nothing at all until ``resume`` (flat battery, out of range, removed
  from the wall): the agent has to notice the silence and raise "sensor offline".
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from simulators.ble import bthome
from simulators.ble.bthome import ButtonEvent, Measurement, ObjectId


class SensorKind(StrEnum):
    """What a simulated sensor is, and so which BTHome objects it sends."""

    DOOR = "door"                # fire-door contact: 0x1A door (open = True)
    SMOKE = "smoke"              # stand-alone smoke detector: 0x29 smoke
    PRESSURE = "pressure"        # hydrant / sprinkler pressure: 0x04 pressure (MPa as hPa)
    TEMPERATURE = "temperature"  # room / cable temperature: 0x02 temperature + 0x03 humidity
    CALLPOINT = "callpoint"      # wireless manual call point: 0x3A button event


class Action(StrEnum):
    """Scenario event actions."""

    OPEN = "open"
    CLOSE = "close"
    SMOKE = "smoke"
    CLEAR = "clear"
    SET = "set"
    PRESS = "press"
    SILENCE = "silence"
    RESUME = "resume"


class Field(StrEnum):
    """What ``action = "set"`` changes."""

    VALUE = "value"        # pressure in MPa, or temperature in °C
    HUMIDITY = "humidity"  # % (temperature sensors)
    BATTERY = "battery"    # % (every kind)
    RSSI = "rssi"          # dBm (every kind)


COMMON_ACTIONS = frozenset({Action.SET, Action.SILENCE, Action.RESUME})
ACTIONS: Mapping[SensorKind, frozenset[Action]] = {
    SensorKind.DOOR: COMMON_ACTIONS | {Action.OPEN, Action.CLOSE},
    SensorKind.SMOKE: COMMON_ACTIONS | {Action.SMOKE, Action.CLEAR},
    SensorKind.PRESSURE: COMMON_ACTIONS,
    SensorKind.TEMPERATURE: COMMON_ACTIONS,
    SensorKind.CALLPOINT: COMMON_ACTIONS | {Action.PRESS},
}
COMMON_FIELDS = frozenset({Field.BATTERY, Field.RSSI})
FIELDS: Mapping[SensorKind, frozenset[Field]] = {
    SensorKind.DOOR: COMMON_FIELDS,
    SensorKind.SMOKE: COMMON_FIELDS,
    SensorKind.PRESSURE: COMMON_FIELDS | {Field.VALUE},
    SensorKind.TEMPERATURE: COMMON_FIELDS | {Field.VALUE, Field.HUMIDITY},
    SensorKind.CALLPOINT: COMMON_FIELDS,
}
# Allowed ranges per field, checked when a scenario is loaded. Pressure: what object 0x04 can
# carry (uint24 of 0.01 hPa = 16.78 MPa); temperature: sint16 of 0.01 °C.
RANGES: Mapping[tuple[SensorKind | None, Field], tuple[float, float]] = {
    (SensorKind.PRESSURE, Field.VALUE): (0.0, 16.0),
    (SensorKind.TEMPERATURE, Field.VALUE): (-40.0, 125.0),
    (None, Field.HUMIDITY): (0.0, 100.0),
    (None, Field.BATTERY): (0.0, 100.0),
    (None, Field.RSSI): (-127.0, 20.0),
}
DEFAULT_VALUE: Mapping[SensorKind, float] = {
    SensorKind.PRESSURE: 0.35,      # MPa, a healthy hydrant line
    SensorKind.TEMPERATURE: 22.0,   # °C
}


def value_range(kind: SensorKind, which: Field) -> tuple[float, float]:
    """The allowed range of ``which`` on a sensor of ``kind``."""
    return RANGES.get((kind, which)) or RANGES[(None, which)]


@dataclass(frozen=True, slots=True)
class SensorConfig:
    """One simulated sensor as declared in a scenario (validated by :mod:`.scenario`)."""

    address: str                     # upper-case "AA:BB:CC:DD:EE:FF"
    kind: SensorKind
    name: str
    interval: float = 5.0            # seconds between periodic adverts (simulated time)
    battery: float = 100.0           # %
    rssi: int = -60                  # dBm
    key: bytes | None = None         # 16-byte BTHome bind key: encrypted adverts
    value: float | None = None       # initial pressure (MPa) or temperature (°C)
    humidity: float = 45.0           # %, temperature sensors only


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """A scenario event: at simulated time ``at`` do ``action`` on the sensor ``address``."""

    at: float
    address: str
    action: Action
    value: float | None = None
    field: Field = Field.VALUE


@dataclass(frozen=True, slots=True)
class Advertisement:
    """An advert ready for BlueZ: who sends it, at what signal strength, which service data."""

    address: str
    name: str
    rssi: int
    service_data: Mapping[str, bytes]
    at: float
    summary: str = ""           # the sensor state in words, for logs


@dataclass(slots=True)
class SimSensor:
    """The changing state of one sensor."""

    config: SensorConfig
    is_open: bool = False
    smoke: bool = False
    value: float = 0.0
    humidity: float = 0.0
    battery: float = 0.0
    rssi: int = 0
    silenced: bool = False
    button: ButtonEvent = ButtonEvent.NONE
    packet_id: int = 0
    counter: int = 0
    _mac: bytes = field(default=b"", repr=False)

    @classmethod
    def from_config(cls, config: SensorConfig) -> SimSensor:
        value = config.value if config.value is not None else DEFAULT_VALUE.get(config.kind, 0.0)
        return cls(config=config, value=value, humidity=config.humidity,
                   battery=config.battery, rssi=config.rssi,
                   _mac=bthome.parse_mac(config.address))

    def apply(self, event: TimelineEvent) -> bool:
        """Apply an event; True when the sensor should advertise at once (a state change)."""
        match event.action:
            case Action.OPEN | Action.CLOSE:
                changed = self.is_open != (event.action is Action.OPEN)
                self.is_open = event.action is Action.OPEN
                return changed
            case Action.SMOKE | Action.CLEAR:
                changed = self.smoke != (event.action is Action.SMOKE)
                self.smoke = event.action is Action.SMOKE
                return changed
            case Action.PRESS:
                self.button = ButtonEvent.PRESS
                return True
            case Action.SILENCE:
                self.silenced = True
                return False
            case Action.RESUME:
                was_silenced, self.silenced = self.silenced, False
                return was_silenced
            case Action.SET:
                assert event.value is not None  # the scenario loader guarantees it
                self._set(event.field, event.value)
                # Door/smoke/button changes are sent at once; a new measured value waits for
                # the next periodic advert, as a measuring sensor does.
                return False
        return False  # pragma: no cover  (exhaustive match)

    def _set(self, which: Field, value: float) -> None:
        match which:
            case Field.VALUE:
                self.value = value
            case Field.HUMIDITY:
                self.humidity = value
            case Field.BATTERY:
                self.battery = value
            case Field.RSSI:
                self.rssi = round(value)

    def measurements(self) -> list[Measurement]:
        """The BTHome objects this sensor sends in its current state."""
        objects: list[Measurement] = [
            (ObjectId.PACKET_ID, self.packet_id),
            (ObjectId.BATTERY, round(self.battery)),
        ]
        match self.config.kind:
            case SensorKind.DOOR:
                objects.append((ObjectId.DOOR, self.is_open))
            case SensorKind.SMOKE:
                objects.append((ObjectId.SMOKE, self.smoke))
            case SensorKind.PRESSURE:
                objects.append((ObjectId.PRESSURE, bthome.mpa_to_hpa(self.value)))
            case SensorKind.TEMPERATURE:
                objects.append((ObjectId.TEMPERATURE, self.value))
                objects.append((ObjectId.HUMIDITY, self.humidity))
            case SensorKind.CALLPOINT:
                objects.append((ObjectId.BUTTON, self.button))
        return objects

    def describe(self) -> str:
        """A one-line human summary of the state, for the CLI."""
        match self.config.kind:
            case SensorKind.DOOR:
                state = "open" if self.is_open else "closed"
            case SensorKind.SMOKE:
                state = "SMOKE" if self.smoke else "clear"
            case SensorKind.PRESSURE:
                state = f"{self.value:.3f} MPa"
            case SensorKind.TEMPERATURE:
                state = f"{self.value:.2f} °C {self.humidity:.0f} %RH"
            case SensorKind.CALLPOINT:
                state = "PRESSED" if self.button is ButtonEvent.PRESS else "idle"
        lock = " encrypted" if self.config.key else ""
        return f"{state}, battery {self.battery:.0f} %, rssi {self.rssi} dBm{lock}"

    def advertise(self, at: float) -> Advertisement:
        """Build the next advert and step the packet id / encryption counter."""
        self.packet_id = (self.packet_id + 1) % 256
        self.counter = (self.counter + 1) % (1 << 32)
        data = bthome.encode_service_data(
            self.measurements(), key=self.config.key, mac=self._mac, counter=self.counter,
        )
        summary = self.describe()
        # A button event is sent once; later periodic adverts say "no event".
        self.button = ButtonEvent.NONE
        return Advertisement(address=self.config.address, name=self.config.name, rssi=self.rssi,
                             service_data={bthome.SERVICE_UUID: data}, at=at, summary=summary)


class Simulation:
    """Pure scheduler over simulated time: ``advance(now)`` returns the adverts due by ``now``.

    Sensors first advertise at ``t = 0`` (staggered by 10 ms each so they do not all fire in
    one burst), then every ``interval``; an event that changes a sensor's state makes it
    advertise at the event's time and restarts its interval from there.
    """

    STAGGER = 0.01

    def __init__(self, sensors: Iterable[SensorConfig],
                 events: Iterable[TimelineEvent] = ()) -> None:
        self.sensors: dict[str, SimSensor] = {}
        self._due: dict[str, float] = {}
        for index, config in enumerate(sensors):
            self.sensors[config.address] = SimSensor.from_config(config)
            self._due[config.address] = index * self.STAGGER
        # (at, sequence, event): sequence keeps the file order for events at the same time.
        self._events = [(e.at, i, e) for i, e in enumerate(events)]
        heapq.heapify(self._events)
        self.now = 0.0

    def next_deadline(self) -> float | None:
        """Simulated time of the next thing to do, or None if nothing will ever happen again."""
        candidates = [due for address, due in self._due.items()
                      if not self.sensors[address].silenced]
        if self._events:
            candidates.append(self._events[0][0])
        return min(candidates, default=None)

    def advance(self, now: float) -> list[Advertisement]:
        """Apply events and emit adverts due at or before ``now``, in time order."""
        out: list[Advertisement] = []
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > now:
                break
            if self._events and self._events[0][0] == deadline:
                _, _, event = heapq.heappop(self._events)
                sensor = self.sensors[event.address]
                if sensor.apply(event) and not sensor.silenced:
                    out.append(sensor.advertise(event.at))
                    self._due[event.address] = event.at + sensor.config.interval
                continue
            address = min((a for a in self._due if not self.sensors[a].silenced),
                          key=self._due.__getitem__)
            sensor = self.sensors[address]
            due = self._due[address]
            out.append(sensor.advertise(due))
            # Every slot is sent, even if ``now`` jumped past several: simulated time is the
            # authority, which keeps runs reproducible whatever the host's load.
            self._due[address] = due + sensor.config.interval
        self.now = max(self.now, now)
        return out
