"""The contact event types in the collector: accepted on the wire, and the site colours they
give as docs/modbus-contacts.md and docs/collector.md say (a closed supply valve is yellow; a
running pump or a controller in manual colours nothing; both configurable in [risk])."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from collector.config import DEFAULT_WEBHOOK_EVENTS, RiskRules, parse_config
from collector.risk import Colour, RiskBoard
from common.config import ConfigError
from protocols.wire import (
    Bus,
    Event,
    EventType,
    Measurement,
    Quantity,
    Source,
    decode_batch_partial,
    default_priority,
    encode_batches,
)

NOW = 1_718_000_000_000
VALVE = Source("modbus/bus1/7/ch1", Bus.MODBUS, description="3F riser supply valve")
PUMP = Source("modbus/bus1/9/run", Bus.MODBUS, description="fire pump 1 run")
PUMP_FAULT = Source("modbus/bus1/9/fault", Bus.MODBUS, description="fire pump 1 fault")
PUMP_MODE = Source("modbus/bus1/9/manual", Bus.MODBUS, description="fire pump 1 auto/manual")
EXAMPLE = Path(__file__).resolve().parents[2] / "collector" / "collector.example.toml"


def ev(src: Source, kind: EventType, seq: int, active: bool = True) -> Event:
    return Event(source=src, type=kind, receive_ms=NOW + seq, active=active,
                 detail="channel 1: closed (normal: open)").with_seq(seq)


def received(*records: Event | Measurement) -> list[Event | Measurement]:
    """What a collector decodes from an agent's batch carrying ``records``."""
    payloads = encode_batches("gw-1", "site-1", NOW, list(records))
    out: list[Event | Measurement] = []
    for p in payloads:
        partial = decode_batch_partial(p)
        assert partial.faults == ()  # the collector accepts every new type and quantity
        assert partial.batch is not None
        out.extend(partial.batch.records)
    return out


def test_the_wire_carries_the_contact_types_and_the_state_quantity() -> None:
    state = Measurement(source=PUMP, quantity=Quantity.STATE, value=1.0, unit="",
                        receive_ms=NOW).with_seq(5)
    got = received(ev(VALVE, EventType.VALVE_OFF_NORMAL, 1), ev(PUMP, EventType.RUNNING, 2),
                   ev(PUMP_MODE, EventType.MANUAL_MODE, 3), state)
    assert [r.seq for r in got] == [1, 2, 3, 5]
    valve = got[0]
    assert isinstance(valve, Event) and valve.type is EventType.VALVE_OFF_NORMAL
    assert valve.source.description == "3F riser supply valve"
    assert int(valve.priority) == int(default_priority(EventType.VALVE_OFF_NORMAL)) == 1
    assert isinstance(got[1], Event) and int(got[1].priority) == 2  # running: state information
    assert isinstance(got[3], Measurement) and got[3].unit == "" and got[3].value == 1.0


def test_default_rules_a_closed_valve_is_yellow_a_running_pump_colours_nothing() -> None:
    board = RiskBoard(RiskRules())
    for r in received(ev(PUMP, EventType.RUNNING, 1), ev(PUMP_MODE, EventType.MANUAL_MODE, 2)):
        assert isinstance(r, Event)
        assert not board.apply_event("site-1", "gw-1", r)
    assert board.assess("site-1").colour is Colour.GREEN
    (valve,) = received(ev(VALVE, EventType.VALVE_OFF_NORMAL, 3))
    assert isinstance(valve, Event) and board.apply_event("site-1", "gw-1", valve)
    a = board.assess("site-1")
    assert a.colour is Colour.YELLOW
    assert a.reasons == ("valve_off_normal: gw-1 modbus/bus1/7/ch1 3F riser supply valve",)
    (fault,) = received(ev(PUMP_FAULT, EventType.FAULT, 4))
    assert isinstance(fault, Event) and board.apply_event("site-1", "gw-1", fault)
    (reopened,) = received(ev(VALVE, EventType.VALVE_OFF_NORMAL, 5, active=False))
    assert isinstance(reopened, Event) and board.apply_event("site-1", "gw-1", reopened)
    assert board.assess("site-1").colour is Colour.YELLOW  # the pump fault still
    (cleared,) = received(ev(PUMP_FAULT, EventType.FAULT, 6, active=False))
    assert isinstance(cleared, Event) and board.apply_event("site-1", "gw-1", cleared)
    assert board.assess("site-1").colour is Colour.GREEN


def test_the_example_config_colours_a_closed_valve_and_notifies_it() -> None:
    config = parse_config(tomllib.loads(EXAMPLE.read_text("utf-8")), base_dir=EXAMPLE.parent)
    assert "valve_off_normal" in config.risk.yellow_events
    assert config.risk.yellow_events == RiskRules().yellow_events  # the sample shows defaults
    assert "valve_off_normal" in DEFAULT_WEBHOOK_EVENTS
    assert "running" not in config.risk.yellow_events | config.risk.red_events


@pytest.mark.parametrize(("risk", "kind", "expected"), [
    ({"red_events": ["fire_alarm", "valve_off_normal"]}, EventType.VALVE_OFF_NORMAL, Colour.RED),
    ({"yellow_events": ["fault"]}, EventType.VALVE_OFF_NORMAL, Colour.GREEN),
    ({"yellow_events": ["fault", "manual_mode"]}, EventType.MANUAL_MODE, Colour.YELLOW),
    ({"yellow_events": ["running"]}, EventType.RUNNING, Colour.YELLOW),
])
def test_risk_section_configures_the_contact_colours(risk: dict[str, list[str]],
                                                     kind: EventType, expected: Colour) -> None:
    config = parse_config({"risk": risk})
    board = RiskBoard(config.risk)
    board.apply_event("site-1", "gw-1", ev(VALVE, kind, 1))
    assert board.assess("site-1").colour is expected


def test_a_misspelt_contact_type_in_risk_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"risk\.yellow_events: 'valve_closed' is not an "
                                          r"event type"):
        parse_config({"risk": {"yellow_events": ["valve_closed"]}})
