"""The [ble] table of a scenario file: what it accepts, and golden error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.config import ConfigError, ConfigErrors
from simulators.ble.scenario import (
    Scenario,
    load_scenario,
    parse_scenario,
    sensor_from_flag,
)
from simulators.ble.sensors import Action, Field, SensorKind, TimelineEvent

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
    assert scenario.events[0] == TimelineEvent(at=10.0, address="A4:C1:38:00:00:01",
                                               action=Action.OPEN)
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
    """Every problem found, one message each."""
    with pytest.raises(ConfigError) as err:
        parse_scenario(document)
    errors = err.value.errors if isinstance(err.value, ConfigErrors) else (err.value,)
    return [str(e) for e in errors]


def test_missing_ble_table() -> None:
    assert problems({"modbus": {}}) == ["ble: no [ble] table in this file"]


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
        'ble.sensors[0].address: must be a MAC address like "A4:C1:38:00:00:01", '
        "got 'A4:C1:38:00:00'",
        "ble.sensors[0].kind: must be one of 'callpoint', 'door', 'pressure', 'smoke', "
        "'temperature', got 'dor'",
        "ble.sensors[0].intervall: unknown key; allowed here: address, battery, humidity, "
        "interval, key, kind, name, rssi, value",
        "ble.sensors[1].address: is required",
        "ble.sensors[1].battery: must be at most 100, got 120",
        "ble.sensors[1].key: bind key must be 16 bytes (32 hex characters), got 2 bytes",
        "ble.sensors[2].value: a door sensor has no value; allowed for: pressure, temperature",
        "ble.sensors[3].value: must be a number, got a string",
        "ble.sensors[4].kind: is required; one of 'callpoint', 'door', 'pressure', 'smoke', "
        "'temperature'",
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
        "ble.events[0].action: must be one of 'close', 'open', 'resume', 'set', 'silence' for "
        "a door sensor, got 'smoke'",
        "ble.events[1].sensor: must be the address or name of a declared sensor, got "
        "'nowhere'; declared: A4:C1:38:00:00:01, A4:C1:38:00:00:02, door-0001, hydrant",
        "ble.events[2].at: is required",
        'ble.events[2].value: is required for action "set"',
        "ble.events[3].value: must be at most 16, got 30",
        "ble.events[4].field: is required for a door sensor; one of 'battery', 'rssi'",
        "ble.events[5].field: must be one of 'battery', 'rssi' for a door sensor, got 'value'",
        "ble.events[6].value: only used with action \"set\", not 'open'",
        "ble.events[7].action: must be one of 'resume', 'set', 'silence' for a pressure sensor, "
        "got 'explode'",
        "ble.events[8].at: must be at least 0, got -1",
        "ble.events[8].when: unknown key; allowed here: action, at, field, sensor, value",
    ]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[ble\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_scenario(path)
    path.write_text('[[ble.sensors]]\naddress = "A4:C1:38:00:00:01"\nkind = "siren"\nrssi = 99\n')
    with pytest.raises(ConfigErrors) as err:
        load_scenario(path)
    assert [str(e) for e in err.value.errors] == [
        f"{path}: ble.sensors[0].kind: must be one of 'callpoint', 'door', 'pressure', "
        "'smoke', 'temperature', got 'siren'",
        f"{path}: ble.sensors[0].rssi: must be at most 20, got 99",
    ]


def test_sensor_flag() -> None:
    sensor = sensor_from_flag("smoke:a4:c1:38:00:00:07", interval=1.5)
    assert (sensor.kind, sensor.address, sensor.interval) == (
        SensorKind.SMOKE, "A4:C1:38:00:00:07", 1.5)


def test_bad_sensor_flag_message() -> None:
    with pytest.raises(ConfigErrors) as err:
        sensor_from_flag("dor:A4:C1:38:00:00:01")
    assert [str(e) for e in err.value.errors] == [
        "--sensor 'dor:A4:C1:38:00:00:01': kind: must be one of 'callpoint', 'door', "
        "'pressure', 'smoke', 'temperature', got 'dor'",
    ]
    assert str(err.value).startswith("--sensor 'dor:A4:C1:38:00:00:01': kind: ")
