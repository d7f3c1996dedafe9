"""The record model and messages as Python objects: construction, defaults, validation."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from protocols.wire import (
    DEFAULT_PRIORITY,
    LWT_REASON,
    UNITS,
    Batch,
    Bus,
    Command,
    CommandAck,
    CommandName,
    Event,
    EventType,
    GatewayState,
    Health,
    LinkState,
    Measurement,
    Priority,
    Quantity,
    Source,
    Status,
    WireError,
    WireErrorReason,
    default_priority,
    last_will,
    records,
)
from protocols.wire import source as source_module

R = WireErrorReason
SRC = Source("modbus/bus1/3/pressure", Bus.MODBUS)
PANEL = Source("panel/1-1/1", Bus.GB26875, system_type=1, system_address=1, description="一层手报")


@contextmanager
def refused(reason: WireErrorReason, path: str) -> Iterator[None]:
    with pytest.raises(WireError) as info:
        yield
    assert (info.value.reason, info.value.path) == (reason, path), str(info.value)


def test_every_event_type_has_a_default_priority():
    assert set(DEFAULT_PRIORITY) == set(EventType)
    assert default_priority(EventType.FIRE_ALARM) is Priority.FIRE
    assert default_priority(EventType.SENSOR_OFFLINE) is Priority.ALARM
    assert default_priority(EventType.RESET) is Priority.EVENT


def test_every_quantity_has_units():
    assert set(UNITS) == set(Quantity)
    assert UNITS[Quantity.ANALOG] == ()
    assert all(UNITS[q] for q in Quantity if q is not Quantity.ANALOG)


def test_enum_values_are_snake_case():
    for enum in (EventType, Quantity, Bus, CommandName, GatewayState, LinkState):
        for member in enum:
            assert member.value == member.name.lower()


def test_event_defaults():
    e = Event(source=PANEL, type=EventType.FAULT, receive_ms=5)
    assert (e.seq, e.active, e.priority, e.operations, e.detail) == (
        0,
        True,
        Priority.ALARM,
        (),
        None,
    )
    restore = Event(source=PANEL, type="fault", receive_ms=6, active=False)
    assert restore.type is EventType.FAULT
    assert restore.priority is Priority.ALARM  # a restore keeps the class of its raise
    gas = Event(source=PANEL, type=EventType.THRESHOLD_HIGH, receive_ms=6, priority=Priority.FIRE)
    assert gas.priority is Priority.FIRE


def test_measurement_defaults_and_normalisation():
    m = Measurement(source=SRC, quantity="temperature", value=21, receive_ms=1)
    assert m.quantity is Quantity.TEMPERATURE
    assert m.unit == "°C"  # the only unit of the quantity
    assert type(m.value) is float
    assert m.priority is Priority.MEASUREMENT
    with refused(R.MISSING_FIELD, "u"):
        Measurement(source=SRC, quantity=Quantity.PRESSURE, value=0.3, receive_ms=1)
    analog = Measurement(source=SRC, quantity=Quantity.ANALOG, value=1, unit="t/h", receive_ms=1)
    assert analog.unit == "t/h"


def test_with_seq_numbers_a_copy():
    m = Measurement(source=SRC, quantity=Quantity.PRESSURE, value=0.3, unit="MPa", receive_ms=1)
    numbered = m.with_seq(42)
    assert (m.seq, numbered.seq) == (0, 42)
    assert dataclasses.replace(numbered, seq=0) == m
    e = Event(source=PANEL, type=EventType.FAULT, receive_ms=5, priority=Priority.FIRE)
    assert e.with_seq(3).priority is Priority.FIRE  # an override survives renumbering
    with refused(R.BAD_VALUE, "seq"):
        m.with_seq(2**53)


def test_records_are_frozen_hashable_and_copyable():
    e = Event(source=PANEL, type=EventType.FIRE_ALARM, receive_ms=5, seq=1, operations=["reset"])
    assert e.operations == ("reset",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.seq = 2  # type: ignore[misc]
    assert len({e, copy.copy(e), pickle.loads(pickle.dumps(e))}) == 1
    assert copy.deepcopy(PANEL) == PANEL
    assert type(e) is Event and type(e.source) is Source


def test_thawed_twins_share_the_frozen_layout():
    for cls, module in ((Source, source_module), (Event, records), (Measurement, records)):
        twin = getattr(module, f"_Thawed{cls.__name__}")
        assert twin.__slots__ == cls.__slots__
        assert tuple(f.name for f in dataclasses.fields(cls)) == cls.__slots__


@pytest.mark.parametrize(
    ("kwargs", "reason", "path"),
    [
        ({"seq": True}, R.BAD_TYPE, "seq"),
        ({"seq": -1}, R.BAD_VALUE, "seq"),
        ({"receive_ms": 1.0}, R.BAD_TYPE, "rt"),
        ({"source": "modbus/1"}, R.BAD_TYPE, "src"),
        ({"type": "fire"}, R.BAD_VALUE, "ev"),
        ({"type": 1}, R.BAD_TYPE, "ev"),
        ({"active": 1}, R.BAD_TYPE, "on"),
        ({"priority": 5}, R.BAD_VALUE, "pr"),
        ({"priority": True}, R.BAD_TYPE, "pr"),
        ({"source_ms": -5}, R.BAD_VALUE, "st"),
        ({"state": 2**32}, R.BAD_VALUE, "sw"),
        ({"operations": "reset"}, R.BAD_TYPE, "ops"),
        ({"operations": ["ok"] * 17}, R.BAD_VALUE, "ops"),
        ({"operations": [""]}, R.BAD_VALUE, "ops[0]"),
        ({"operator": -1}, R.BAD_VALUE, "opr"),
        ({"value": math.nan}, R.NOT_FINITE, "v"),
        ({"limit": -math.inf}, R.NOT_FINITE, "lim"),
        ({"limit": "1"}, R.BAD_TYPE, "lim"),
        ({"detail": "x" * 257}, R.BAD_VALUE, "det"),
        ({"detail": "\udc80"}, R.BAD_VALUE, "det"),
    ],
)
def test_event_refuses(kwargs, reason, path):
    base = {"source": PANEL, "type": EventType.FAULT, "receive_ms": 1}
    with refused(reason, path):
        Event(**{**base, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "reason", "path"),
    [
        ({"quantity": "pressure", "unit": "Pa"}, R.BAD_VALUE, "u"),
        ({"quantity": "temperature", "unit": "℃"}, R.BAD_VALUE, "u"),
        ({"quantity": "analog", "unit": "x" * 17}, R.BAD_VALUE, "u"),
        ({"quantity": "analog", "unit": 3}, R.BAD_TYPE, "u"),
        ({"unit": b"MPa"}, R.BAD_TYPE, "u"),
        ({"quantity": "Pressure"}, R.BAD_VALUE, "q"),
        ({"value": math.inf}, R.NOT_FINITE, "v"),
        ({"value": True}, R.BAD_TYPE, "v"),
        ({"value": 10**400}, R.BAD_VALUE, "v"),
        ({"priority": 7}, R.BAD_VALUE, "pr"),
    ],
)
def test_measurement_refuses(kwargs, reason, path):
    base = {
        "source": SRC,
        "quantity": Quantity.PRESSURE,
        "value": 0.3,
        "unit": "MPa",
        "receive_ms": 1,
    }
    with refused(reason, path):
        Measurement(**{**base, **kwargs})


@pytest.mark.parametrize(
    ("args", "kwargs", "reason", "path"),
    [
        (("", Bus.BLE), {}, R.BAD_VALUE, "src.id"),
        (("a\tb", Bus.BLE), {}, R.BAD_VALUE, "src.id"),
        (("传感器1", Bus.BLE), {}, R.BAD_VALUE, "src.id"),
        (("a", "zigbee"), {}, R.BAD_VALUE, "src.bus"),
        (("a", Bus.BLE), {"system_type": 256}, R.BAD_VALUE, "src.sys"),
        (("a", Bus.BLE), {"component_type": False}, R.BAD_TYPE, "src.ct"),
        (("a", Bus.BLE), {"description": 5}, R.BAD_TYPE, "src.desc"),
    ],
)
def test_source_refuses(args, kwargs, reason, path):
    with refused(reason, path):
        Source(*args, **kwargs)


def test_batch_accepts_a_list_and_refuses_duplicates():
    m = Measurement(source=SRC, quantity="pressure", value=0.3, unit="MPa", receive_ms=1)
    b = Batch("gw-1", None, 1, [m.with_seq(1), m.with_seq(2)])  # type: ignore[arg-type]
    assert isinstance(b.records, tuple)
    with refused(R.DUPLICATE_SEQ, "recs[1].seq"):
        Batch("gw-1", None, 1, (m.with_seq(1), m.with_seq(1)))
    with refused(R.EMPTY_BATCH, "recs"):
        Batch("gw-1", None, 1, ())
    with refused(R.BAD_TYPE, "recs[0]"):
        Batch("gw-1", None, 1, ("x",))  # type: ignore[arg-type]


def test_status_and_last_will():
    will = last_will("gw-1", 1000, version="0.1.0", site="s-1")
    assert (will.state, will.reason, will.ts_ms) == (GatewayState.OFFLINE, LWT_REASON, 1000)
    assert Status("gw-1", "online", 5).state is GatewayState.ONLINE  # type: ignore[arg-type]
    with refused(R.BAD_VALUE, "state"):
        Status("gw-1", "up", 5)  # type: ignore[arg-type]


def test_health_copies_and_checks_its_mappings():
    evicted = {"measurement": 1}
    h = Health(
        gateway_id="gw-1",
        ts_ms=1,
        uptime_s=1,
        version="v",
        outbox_depth=0,
        evicted=evicted,
        links={"uplink": "down"},  # type: ignore[dict-item]
    )
    evicted["measurement"] = 99
    assert h.evicted == {"measurement": 1}
    assert h.links["uplink"] is LinkState.DOWN
    assert h.uptime_s == 1.0 and type(h.uptime_s) is float
    with refused(R.BAD_VALUE, "counters"):
        Health(
            gateway_id="gw-1", ts_ms=1, uptime_s=1, version="v", outbox_depth=0, counters={"": {}}
        )


def test_command_expiry():
    c = Command("c1", CommandName.PING, 10_000, ttl_s=5)
    assert not c.expired(15_000)
    assert c.expired(15_001)
    assert not Command("c2", CommandName.PING, 0).expired(10**12)


def test_ack_rules():
    assert CommandAck("c1", True, 1).error is None
    with refused(R.MISSING_FIELD, "error"):
        CommandAck("c1", False, 1)
    with refused(R.BAD_VALUE, "result.a.b.c.d.e.f.g.h.i"):
        deep: dict[str, object] = {"i": 1}
        for key in "hgfedcba":
            deep = {key: deep}
        CommandAck("c1", True, 1, result=deep)  # type: ignore[arg-type]
    with refused(R.NOT_FINITE, "result.x[0]"):
        CommandAck("c1", True, 1, result={"x": [math.nan]})
