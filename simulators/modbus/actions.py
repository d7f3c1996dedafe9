"""What scenario events do to the simulated devices: the actions, their parameters and which
devices they fit, as a table (data). No I/O.

:data:`ACTIONS` maps each :class:`Action` to an :class:`ActionSpec` (the devices it applies to,
its parameters with their defaults); :class:`TimelineEvent` is one entry of a scenario's
timeline. The scenario loader (:mod:`.scenario`) validates against the table, the device model
(:mod:`.model`) carries the actions out. Contacts are named as ``DeviceProfile.with_channels``
names them (:func:`contact_names`) and their states by their meaning's state names
(:func:`contact_states`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from protocols.registers import DeviceProfile, Meaning, Quantity


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
CONTACT_ACTIONS = frozenset({Action.CONTACT, Action.VALVE_CLOSE, Action.VALVE_OPEN,
                              Action.PUMP_FAULT, Action.MANUAL, Action.AUTO})
PUMP_ACTIONS = frozenset({Action.PUMP_START, Action.PUMP_STOP, Action.PUMP_FAULT})
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
