"""Three-colour risk per site: the rules, one by one, and their persistence."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from collector.config import RiskRules
from collector.registry import Registry
from collector.risk import Colour, RiskBoard
from protocols.wire import Bus, Event, EventType, Measurement, Quantity, Source

NOW = 1_718_000_000_000
SMOKE = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")
SMOKE_2 = Source("panel/2-1/42-0x00000007", Bus.GB26875)
PUMP = Source("panel/1-1/87-0x00000065", Bus.GB26875)
PRESSURE = Source("modbus/bus1/3/pressure", Bus.MODBUS)
LOW_RULE = Source("rule/pressure-low/modbus/bus1/3/pressure", Bus.RULE)
HIGH_RULE = Source("rule/residual-current-high/modbus/bus2/1", Bus.RULE)
BLE = Source("ble/A4:C1:38:00:00:01", Bus.BLE)


def ev(src: Source, kind: EventType, seq: int, active: bool = True, **kw: object) -> Event:
    return Event(source=src, type=kind, receive_ms=NOW + seq, seq=seq, active=active,
                 **kw)  # type: ignore[arg-type]


def value(v: float, seq: int, unit: str = "MPa", q: Quantity = Quantity.PRESSURE,
          src: Source = PRESSURE) -> Measurement:
    return Measurement(source=src, quantity=q, value=v, receive_ms=NOW + seq, unit=unit, seq=seq)


def colour(board: RiskBoard, site: str = "s1") -> Colour:
    return board.assess(site).colour


def test_fire_alarm_is_red_until_cleared() -> None:
    board = RiskBoard(RiskRules())
    assert colour(board) is Colour.GREEN
    assert board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 1))
    a = board.assess("s1")
    assert a.colour is Colour.RED
    assert a.reasons == ("fire_alarm: gw panel/1-1/42-0x00000102 三层东走廊感烟探测器",)
    assert not board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 2))  # again
    assert board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 3, active=False))
    assert colour(board) is Colour.GREEN
    assert colour(board, "s2") is Colour.GREEN  # other sites untouched


def test_red_outranks_yellow_and_reasons_are_most_severe_first() -> None:
    board = RiskBoard(RiskRules())
    board.apply_event("s1", "gw", ev(PUMP, EventType.FAULT, 1))
    assert colour(board) is Colour.YELLOW
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 2))
    a = board.assess("s1")
    assert a.colour is Colour.RED
    assert [r.split(":")[0] for r in a.reasons] == ["fire_alarm", "fault"]
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 3, active=False))
    assert colour(board) is Colour.YELLOW


@pytest.mark.parametrize("kind", [EventType.FAULT, EventType.SENSOR_OFFLINE,
                                  EventType.THRESHOLD_HIGH, EventType.MAINS_POWER_FAULT,
                                  EventType.LINK_FAULT, EventType.DOOR_OPEN])
def test_yellow_conditions(kind: EventType) -> None:
    board = RiskBoard(RiskRules())
    board.apply_event("s1", "gw", ev(BLE, kind, 1))
    assert colour(board) is Colour.YELLOW
    board.apply_event("s1", "gw", ev(BLE, kind, 2, active=False))
    assert colour(board) is Colour.GREEN


def test_point_events_do_not_colour() -> None:
    board = RiskBoard(RiskRules())
    assert not board.apply_event("s1", "gw", ev(PUMP, EventType.OPERATION, 1,
                                                operations=("silence",)))
    assert not board.apply_event("s1", "gw", ev(PUMP, EventType.STARTED, 2))
    assert colour(board) is Colour.GREEN


def test_low_water_from_a_threshold_rule_is_red_other_thresholds_yellow() -> None:
    board = RiskBoard(RiskRules())
    board.apply_event("s1", "gw", ev(LOW_RULE, EventType.THRESHOLD_LOW, 1, value=0.1, limit=0.15))
    a = board.assess("s1")
    assert a.colour is Colour.RED and a.reasons[0].endswith("0.1")
    board.apply_event("s1", "gw", ev(LOW_RULE, EventType.THRESHOLD_LOW, 2, active=False))
    board.apply_event("s1", "gw", ev(HIGH_RULE, EventType.THRESHOLD_LOW, 3))
    assert colour(board) is Colour.YELLOW  # not a pressure/level source


def test_configured_pressure_and_level_limits() -> None:
    board = RiskBoard(RiskRules(pressure_critical_mpa=0.05, level_critical_m=0.5))
    assert not board.apply_measurement("s1", "gw", value(0.30, 1))
    assert board.apply_measurement("s1", "gw", value(40, 2, unit="kPa"))  # 0.04 MPa
    assert board.assess("s1").reasons == (
        "pressure_critical: gw modbus/bus1/3/pressure 0.04 MPa < 0.05",)
    assert not board.apply_measurement("s1", "gw", value(0.03, 3))  # still low: no change
    assert not board.apply_measurement("s1", "gw", value(0.5, 2))  # an older reading: ignored
    assert board.apply_measurement("s1", "gw", value(0.6, 4, unit="bar"))  # 0.06 MPa
    assert colour(board) is Colour.GREEN
    tank = Source("modbus/bus1/5/level", Bus.MODBUS)
    assert board.apply_measurement("s1", "gw", value(30, 5, "cm", Quantity.LEVEL, tank))
    assert colour(board) is Colour.RED
    off = RiskBoard(RiskRules())  # no limits configured: readings never colour
    assert not off.apply_measurement("s1", "gw", value(0.0, 1))


def test_a_panel_reset_clears_its_latched_fire_alarms_only() -> None:
    board = RiskBoard(RiskRules())
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 1))
    board.apply_event("s1", "gw", ev(SMOKE_2, EventType.FIRE_ALARM, 2))
    board.apply_event("s1", "gw", ev(PUMP, EventType.FAULT, 3))
    reset = Source("panel/1-1/system", Bus.GB26875)
    assert board.apply_event("s1", "gw", ev(reset, EventType.RESET, 4))
    kinds = sorted((c.source_id, c.kind) for c in board.conditions("s1"))
    # Panel 1-1's fire alarm is cleared; its fault (physical) and panel 2-1's alarm stay.
    assert kinds == [("panel/1-1/87-0x00000065", "fault"),
                     ("panel/2-1/42-0x00000007", "fire_alarm")]
    # A fire alarm raised after the reset (higher seq) is not undone by it.
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 5))
    assert colour(board) is Colour.RED


def test_gateway_offline_colour_is_configurable() -> None:
    board = RiskBoard(RiskRules())
    assert board.set_gateway_offline("s1", "gw", True, NOW)
    assert board.assess("s1").reasons == ("gateway_offline: gw gateway",)
    assert colour(board) is Colour.YELLOW
    assert board.set_gateway_offline("s1", "gw", False, NOW)
    assert colour(board) is Colour.GREEN
    red = RiskBoard(replace(RiskRules(), gateway_offline="red"))
    red.set_gateway_offline("s1", "gw", True, NOW)
    assert colour(red) is Colour.RED
    none = RiskBoard(replace(RiskRules(), gateway_offline=None))
    assert not none.set_gateway_offline("s1", "gw", True, NOW)
    assert colour(none) is Colour.GREEN


def test_custom_rules_change_the_colours() -> None:
    rules = replace(RiskRules(), red_events=frozenset({"fire_alarm", "supervisory"}),
                    yellow_events=frozenset())
    board = RiskBoard(rules)
    board.apply_event("s1", "gw", ev(PUMP, EventType.SUPERVISORY, 1))
    assert colour(board) is Colour.RED
    board.apply_event("s1", "gw", ev(BLE, EventType.FAULT, 2))
    assert [c.kind for c in board.conditions("s1")] == ["supervisory"]  # faults ignored


def test_conditions_survive_a_restart_through_the_registry(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry.sqlite")
    board = RiskBoard(RiskRules(), reg.conditions())
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 1))
    board.apply_event("s2", "gw2", ev(PUMP, EventType.FAULT, 2))
    board.apply_event("s2", "gw2", ev(BLE, EventType.SENSOR_OFFLINE, 3))
    board.apply_event("s2", "gw2", ev(BLE, EventType.SENSOR_OFFLINE, 4, active=False))
    reg.record_conditions(*board.take_changes())
    for site in ("s1", "s2"):
        assert reg.set_site(board.assess(site), NOW)
    assert not reg.set_site(board.assess("s1"), NOW + 1)  # unchanged: no new point
    reg.close()
    reg = Registry(tmp_path / "registry.sqlite")
    again = RiskBoard(RiskRules(), reg.conditions())
    assert colour(again, "s1") is Colour.RED and colour(again, "s2") is Colour.YELLOW
    assert again.assess("s1") == board.assess("s1")
    assert reg.sites["s1"].colour == "red" and reg.sites["s2"].colour == "yellow"
    # Cleared after the restart: it is gone from the database too.
    again.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 5, active=False))
    reg.record_conditions(*again.take_changes())
    reg.flush()
    assert [c.kind for c in reg.conditions()] == ["fault"]
    reg.close()
