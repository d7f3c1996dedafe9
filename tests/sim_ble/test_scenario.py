"""The [ble] table of a scenario file: what it accepts, and golden error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulators.ble.scenario import (
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
    sensor_from_flag,
)
from simulators.ble.sensors import Action, Event, Field, SensorKind

EXAMPLE = Path(__file__).resolve().parents[2] / "simulators" / "ble" / "example.toml"


def test_the_example_scenario_loads_and_other_sections_are_ignored() -> None:
    scenario = load_scenario(EXAMPLE)
    assert [s.kind for s in scenario.sensors] == [
        SensorKind.DOOR, SensorKind.SMOKE, SensorKind.PRESSURE, SensorKind.TEMPERATURE,
        SensorKind.PRESSURE, SensorKind.CALLPOINT,
    ]
    door = scenario.sensors[0]
    assert (door.address, door.name, door.interval) == ("A4:C1:38:00:00:01", "stair-2F", 5.0)
    sprinkler = scenario.sensors[4]
    assert sprinkler.key == bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
    assert sprinkler.value == 0.42
    assert scenario.events[0] == Event(at=10.0, address="A4:C1:38:00:00:01", action=Action.OPEN)
    # Events may name a sensor by name or address; they are stored by address.
    low = next(e for e in scenario.events if e.action is Action.SET and e.field is Field.VALUE)
    assert (low.address, low.value) == ("A4:C1:38:00:00:03", 0.12)


def _ble(sensors: list[dict[str, Any]], events: list[dict[str, Any]] | None = None,
         **extra: Any) -> dict[str, Any]:
    return {"ble": {"sensors": sensors, "events": events or [], **extra}}


DOOR = {"address": "a4:c1:38:00:00:01", "kind": "door"}
PRESSURE = {"address": "A4:C1:38:00:00:02", "kind": "pressure", "name": "hydrant"}


def test_defaults_and_normalised_address() -> None:
    scenario = parse_scenario(_ble([DOOR]))
    assert scenario == Scenario(sensors=scenario.sensors, events=(), adapter="hci0")
    door = scenario.sensors[0]
    assert door.address == "A4:C1:38:00:00:01"
    assert door.name == "door-0001"
    assert (door.interval, door.battery, door.rssi, door.key, door.value) == (
        5.0, 100.0, -60, None, None)


def problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(document)
    return err.value.problems


def test_missing_ble_table() -> None:
    assert problems({"modbus": {}}) == ["ble: the scenario has no [ble] table"]


def test_no_sensors() -> None:
    assert problems({"ble": {}}) == ["ble.sensors: at least one [[ble.sensors]] table is required"]


def test_sensor_errors_name_the_key_and_the_allowed_values() -> None:
    assert problems(_ble([
        {"address": "A4:C1:38:00:00", "kind": "dor", "intervall": 3},
        {"kind": "smoke", "battery": 120, "key": "abcd"},
        {"address": "A4:C1:38:00:00:03", "kind": "door", "value": 1.0},
        {"address": "A4:C1:38:00:00:04", "kind": "temperature", "value": "hot"},
        {"address": "A4:C1:38:00:00:05"},
    ])) == [
        "ble.sensors[0].intervall: unknown key; allowed keys: address, kind, name, interval, "
        "battery, rssi, key, value, humidity",
        "ble.sensors[0].address: 'A4:C1:38:00:00' is not a MAC address like "
        '"A4:C1:38:00:00:01"',
        "ble.sensors[0].kind: 'dor' is not allowed; allowed values: callpoint, door, pressure, "
        "smoke, temperature",
        'ble.sensors[1].address: required, a MAC address like "A4:C1:38:00:00:01"',
        "ble.sensors[1].battery: 120 is outside the allowed range 0 .. 100",
        "ble.sensors[1].key: bind key must be 16 bytes (32 hex characters), got 2 bytes",
        "ble.sensors[2].value: a door sensor has no value; allowed for: pressure, temperature",
        "ble.sensors[3].value: 'hot' is not a number",
        "ble.sensors[4].kind: required; allowed values: callpoint, door, pressure, smoke, "
        "temperature",
    ]


def test_duplicate_sensors() -> None:
    assert problems(_ble([DOOR, {**DOOR, "kind": "smoke"},
                          {**PRESSURE}, {**PRESSURE, "address": "A4:C1:38:00:00:09"}])) == [
        "ble.sensors[1].address: A4:C1:38:00:00:01 is declared twice",
        "ble.sensors[3].name: 'hydrant' is used by another sensor",
    ]


def test_event_errors_name_the_key_and_the_allowed_values() -> None:
    assert problems(_ble([DOOR, PRESSURE], [
        {"at": 1, "sensor": "A4:C1:38:00:00:01", "action": "smoke"},
        {"at": 1, "sensor": "nowhere", "action": "open"},
        {"sensor": "hydrant", "action": "set"},
        {"at": 1, "sensor": "hydrant", "action": "set", "value": 30},
        {"at": 1, "sensor": "A4:C1:38:00:00:01", "action": "set", "value": 3},
        {"at": 1, "sensor": "A4:C1:38:00:00:01", "action": "set", "field": "value", "value": 3},
        {"at": 1, "sensor": "A4:C1:38:00:00:01", "action": "open", "value": 3},
        {"at": 1, "sensor": "hydrant", "action": "explode"},
        {"at": -1, "sensor": "hydrant", "action": "silence", "when": 3},
    ])) == [
        "ble.events[0].action: 'smoke' is not allowed for a door sensor; allowed values: close, "
        "open, resume, set, silence",
        "ble.events[1].sensor: 'nowhere' is not a declared sensor; declared: "
        "A4:C1:38:00:00:01, A4:C1:38:00:00:02, door-0001, hydrant",
        "ble.events[2].at: required (simulated seconds from the start)",
        'ble.events[2].value: required for action "set"',
        "ble.events[3].value: 30 is outside the allowed range 0 .. 16",
        "ble.events[4].field: required for a door sensor; allowed values: battery, rssi",
        "ble.events[5].field: 'value' is not allowed for a door sensor; allowed values: "
        "battery, rssi",
        "ble.events[6].value: only used with action \"set\", not 'open'",
        "ble.events[7].action: 'explode' is not allowed for a pressure sensor; allowed values: "
        "resume, set, silence",
        "ble.events[8].when: unknown key; allowed keys: at, sensor, action, field, value",
        "ble.events[8].at: -1 is outside the allowed range 0 .. inf",
    ]


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[ble\n")
    with pytest.raises(ScenarioError, match=r"bad\.toml: not valid TOML"):
        load_scenario(path)


def test_sensor_flag() -> None:
    sensor = sensor_from_flag("smoke:a4:c1:38:00:00:07", interval=1.5)
    assert (sensor.kind, sensor.address, sensor.interval) == (
        SensorKind.SMOKE, "A4:C1:38:00:00:07", 1.5)


def test_bad_sensor_flag_message() -> None:
    with pytest.raises(ScenarioError) as err:
        sensor_from_flag("dor:A4:C1:38:00:00:01")
    assert err.value.problems == [
        "--sensor 'dor:A4:C1:38:00:00:01': kind: 'dor' is not allowed; allowed values: "
        "callpoint, door, pressure, smoke, temperature",
    ]
    assert str(err.value).startswith("invalid BLE scenario:\n  - --sensor")
