"""Code tables of the record model, as data: priorities, event types, quantities and units.

Enum values are the strings on the wire (snake_case). Adding a member is a contract change:
a v1 collector refuses values it does not know, so new members are deployed to collectors
before gateways use them (see docs/wire-protocol.md, "Versioning").
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from types import MappingProxyType

__all__ = [
    "DEFAULT_PRIORITY",
    "UNITS",
    "Bus",
    "EventType",
    "Priority",
    "Quantity",
    "default_priority",
]


class Priority(IntEnum):
    """Delivery class of a record; lower is more urgent.

    GB 26875.1 §4.1.2.3 requires fire alarms to pre-empt other traffic and §4.1.2.1 requires an
    alarm to reach the monitoring centre within 10 s. The edge outbox sends the lowest class
    first and evicts the highest class first when it is full.
    """

    FIRE = 0
    ALARM = 1
    EVENT = 2
    MEASUREMENT = 3

    @property
    def label(self) -> str:
        """Lower-case name used as a JSON key (``Health.evicted``)."""
        return self.name.lower()


class EventType(StrEnum):
    """What happened. ``Event.active`` says whether it was raised (True) or cleared (False)."""

    FIRE_ALARM = "fire_alarm"
    FAULT = "fault"
    SUPERVISORY = "supervisory"
    DISABLED = "disabled"
    STARTED = "started"
    FEEDBACK = "feedback"
    DELAY = "delay"
    POWER_FAULT = "power_fault"
    MAINS_POWER_FAULT = "mains_power_fault"
    BACKUP_POWER_FAULT = "backup_power_fault"
    BUS_FAULT = "bus_fault"
    MANUAL_MODE = "manual_mode"
    CONFIG_CHANGED = "config_changed"
    TEST_MODE = "test_mode"
    RESET = "reset"
    OPERATION = "operation"
    LINK_FAULT = "link_fault"
    """The monitoring line to a panel, or the gateway's uplink, is down."""
    THRESHOLD_LOW = "threshold_low"
    THRESHOLD_HIGH = "threshold_high"
    SENSOR_OFFLINE = "sensor_offline"
    OUT_OF_RANGE = "out_of_range"
    DEVICE_ERROR = "device_error"
    """The device answered with an error, e.g. a Modbus exception reply."""
    DOOR_OPEN = "door_open"
    """A fire door (normally closed) is open."""
    CHECK_POST = "check_post"
    """An operator answered a presence check (查岗)."""
    VALVE_OFF_NORMAL = "valve_off_normal"
    """A fire water supply valve is not in its normal position (a normally open valve closed)."""
    RUNNING = "running"
    """A fire pump or a smoke-exhaust / pressurisation fan is running (run feedback contact)."""


_F, _A, _E = Priority.FIRE, Priority.ALARM, Priority.EVENT

DEFAULT_PRIORITY: Mapping[EventType, Priority] = MappingProxyType(
    {
        EventType.FIRE_ALARM: _F,
        # Conditions that need a person to act, and their restores: a restore shares the
        # class of its raise so the centre never sees "cleared" overtake "raised".
        EventType.FAULT: _A,
        EventType.SUPERVISORY: _A,
        EventType.POWER_FAULT: _A,
        EventType.MAINS_POWER_FAULT: _A,
        EventType.BACKUP_POWER_FAULT: _A,
        EventType.BUS_FAULT: _A,
        EventType.LINK_FAULT: _A,
        EventType.THRESHOLD_LOW: _A,
        EventType.THRESHOLD_HIGH: _A,
        EventType.SENSOR_OFFLINE: _A,
        EventType.OUT_OF_RANGE: _A,
        EventType.DEVICE_ERROR: _A,
        EventType.DOOR_OPEN: _A,
        EventType.VALVE_OFF_NORMAL: _A,
        # Operations and state information.
        EventType.DISABLED: _E,
        EventType.STARTED: _E,
        EventType.FEEDBACK: _E,
        EventType.DELAY: _E,
        EventType.MANUAL_MODE: _E,
        EventType.CONFIG_CHANGED: _E,
        EventType.TEST_MODE: _E,
        EventType.RESET: _E,
        EventType.OPERATION: _E,
        EventType.CHECK_POST: _E,
        EventType.RUNNING: _E,
    }
)


def default_priority(event_type: EventType) -> Priority:
    """The priority an event of this type gets unless its driver says otherwise."""
    return DEFAULT_PRIORITY[event_type]


class Quantity(StrEnum):
    """What a measurement measures; its allowed units are in :data:`UNITS`.

    The one enum for the meaning: the Modbus register maps (``protocols.registers``, whose
    ``CANONICAL_UNIT`` lists the quantities a register can carry) and the firmware's quantity
    codes (``firmware/src/fg/records.py``, written by provisioning) use these members.
    """

    PRESSURE = "pressure"
    LEVEL = "level"
    TEMPERATURE = "temperature"
    RESIDUAL_CURRENT = "residual_current"
    CURRENT = "current"
    VOLTAGE = "voltage"
    BATTERY = "battery"
    RSSI = "rssi"
    HUMIDITY = "humidity"
    MOISTURE = "moisture"
    GAS_CONCENTRATION = "gas_concentration"
    FLOW = "flow"
    AIR_VOLUME = "air_volume"
    WIND_SPEED = "wind_speed"
    EVENT_COUNT = "event_count"
    DURATION = "duration"
    ANALOG = "analog"
    """A user-defined panel analog type: any unit string of at most 16 characters."""
    STATE = "state"
    """A two-state contact's logical state, 1 or 0 (1: valve open, pump running, fault...);
    its changes are events, this is their periodic proof of life."""


# Exact code points matter: "°C" is U+00B0 U+0043 (not U+2103 "℃"), "m³" uses U+00B3.
# Drivers convert vendor spellings ("℃", "m3/h") to these before building a record.
# The first unit of each tuple is the default when a quantity has exactly one unit.
UNITS: Mapping[Quantity, tuple[str, ...]] = MappingProxyType(
    {
        Quantity.PRESSURE: ("MPa", "kPa", "bar"),
        Quantity.LEVEL: ("m", "cm", "mm"),
        Quantity.TEMPERATURE: ("°C",),
        Quantity.RESIDUAL_CURRENT: ("mA", "A"),
        Quantity.CURRENT: ("A", "mA"),
        Quantity.VOLTAGE: ("V",),
        Quantity.BATTERY: ("%",),
        Quantity.RSSI: ("dBm",),
        Quantity.HUMIDITY: ("%",),
        Quantity.MOISTURE: ("%",),
        Quantity.GAS_CONCENTRATION: ("%LEL", "ppm"),
        Quantity.FLOW: ("L/s", "m³/h"),
        Quantity.AIR_VOLUME: ("m³/min",),
        Quantity.WIND_SPEED: ("m/s",),
        Quantity.EVENT_COUNT: ("",),
        Quantity.DURATION: ("s",),
        Quantity.ANALOG: (),  # any unit, see ANALOG_UNIT_MAX
        Quantity.STATE: ("",),
    }
)
ANALOG_UNIT_MAX = 16


class Bus(StrEnum):
    """Where a record came from."""

    GB26875 = "gb26875"
    """A fire panel or user information transmission device (GB/T 26875.3)."""
    MODBUS = "modbus"
    BLE = "ble"
    RULE = "rule"
    """Derived by a gateway rule, e.g. a threshold crossing on a Modbus value."""
    GATEWAY = "gateway"
    """The gateway itself: its uplink, its power, its own faults."""
    FIRMWARE = "firmware"
    """An ESP32 node running the MicroPython firmware."""
