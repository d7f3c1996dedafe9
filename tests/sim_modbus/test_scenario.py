"""Scenario files: the sample loads, other sections are ignored, errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

import simulators.modbus
from common.config import ConfigError
from simulators.modbus.model import Action
from simulators.modbus.scenario import (
    Scenario,
    load_scenario,
    parse_device_option,
    parse_scenario,
)

SAMPLE = Path(simulators.modbus.__file__).parent / "sample.toml"
DEVICES = """
[[modbus.devices]]
id = 1
profile = "pressure-a"
[[modbus.devices]]
id = 2
profile = "level"
"""


def test_sample_scenario_loads() -> None:
    scenario = load_scenario(SAMPLE)
    assert [d.profile.key for d in scenario.devices] == [
        "pressure-a", "pressure-b", "level", "level-cm", "elec-fire", "valve-4", "fire-pump"]
    assert scenario.devices[4].initial == {"residual_current": 40.0, "temperature_1": 32.0}
    assert scenario.seed == 1
    assert {e.action for e in scenario.events} >= {
        Action.HYDRANT_OPEN, Action.DRAIN, Action.REFILL, Action.LEAK_CREEP, Action.SILENCE,
        Action.RESTORE, Action.EXCEPTION, Action.OUT_OF_RANGE, Action.VALVE_CLOSE,
        Action.PUMP_FAULT, Action.MANUAL}
    bus = scenario.build()
    assert sorted(bus.devices) == [1, 2, 3, 4, 5, 7, 9]


def test_only_the_modbus_table_is_read(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[ble]\nsensors = "anything"\n[panel]\nport = 1\n[modbus]\n' + DEVICES
                    + '[[modbus.events]]\nat = 1\ndevice = 2\naction = "drain"\n', "utf-8")
    scenario = load_scenario(path)
    assert [d.name for d in scenario.devices] == ["pressure-a-1", "level-2"]
    assert scenario.events[0].param("rate") == 0.01  # the action's default


def error_of(body: str) -> str:
    import tomllib

    with pytest.raises(ConfigError) as info:
        parse_scenario(tomllib.loads(body))
    return str(info.value)


@pytest.mark.parametrize(("body", "message"), [
    ("[other]\nx = 1\n", "modbus: no [modbus] table in this file"),
    ("[modbus]\nspeed = 2\n",
     "modbus.speed: unknown key; allowed here: devices, events, noise, seed"),
    ("[modbus]\nnoise = -1\n", "modbus.noise: must be at least 0, got -1"),
    ('[[modbus.devices]]\nid = 1\nprofile = "presure-a"\n',
     "modbus.devices[0].profile: must be one of 'di-16', 'di-8', 'elec-fire', 'fire-pump', "
     "'level', 'level-cm', 'pressure-a', 'pressure-b', 'pressure-c', 'valve-4', "
     "got 'presure-a'"),
    ('[[modbus.devices]]\nid = 0\nprofile = "level"\n',
     "modbus.devices[0].id: must be at least 1, got 0"),
    ('[[modbus.devices]]\nid = 248\nprofile = "level"\n',
     "modbus.devices[0].id: must be at most 247, got 248"),
    ('[[modbus.devices]]\nprofile = "level"\n', "modbus.devices[0].id: is required"),
    ('[[modbus.devices]]\nid = 1\nprofile = "level"\nadress = 3\n',
     "modbus.devices[0].adress: unknown key; allowed here: auto_start, id, initial, name, "
     "profile"),
    ('[[modbus.devices]]\nid = 1\nprofile = "level"\ninitial = { pressure = 1 }\n',
     "modbus.devices[0].initial.pressure: unknown key; allowed here: level"),
    ('[[modbus.devices]]\nid = 1\nprofile = "level"\ninitial = "full"\n',
     "modbus.devices[0].initial: must be a number, got a string"),
    (DEVICES + '[[modbus.devices]]\nid = 2\nprofile = "level"\n',
     "modbus.devices[2].id: device 2 is already defined in modbus.devices[1]"),
    (DEVICES + '[[modbus.events]]\nat = 1\ndevice = 1\naction = "explode"\n',
     "modbus.events[0].action: must be one of 'hydrant_open', 'hydrant_close', "
     "'pump_start', 'pump_stop', 'drain', 'refill', 'leak_creep', 'overheat', 'hold', 'set', "
     "'silence', 'exception', 'out_of_range', 'sensor_fault', 'restore', 'contact', "
     "'valve_close', 'valve_open', 'pump_fault', 'manual', 'auto', got 'explode'"),
    (DEVICES + '[[modbus.events]]\nat = 1\ndevice = 9\naction = "silence"\n',
     "modbus.events[0].device: no device 9; defined: 1, 2"),
    (DEVICES + '[[modbus.events]]\ndevice = 1\naction = "silence"\n',
     "modbus.events[0].at: is required"),
    (DEVICES + '[[modbus.events]]\nat = -1\ndevice = 1\naction = "silence"\n',
     "modbus.events[0].at: must be at least 0, got -1"),
    (DEVICES + '[[modbus.events]]\nat = 1\ndevice = 2\naction = "hydrant_open"\n',
     "modbus.events[0].action: hydrant_open needs a device measuring pressure; "
     "device 2 is a level"),
    (DEVICES + '[[modbus.events]]\nat = 1\ndevice = 2\naction = "drain"\nrat = 1\n',
     "modbus.events[0].rat: unknown key for drain; allowed here: at, device, action, rate, "
     "to"),
    (DEVICES + '[[modbus.events]]\nat = 1\ndevice = 2\naction = "drain"\ntau = 1\n',
     "modbus.events[0].tau: not a parameter of drain; allowed here: at, device, action, "
     "rate, to"),
    (DEVICES + '[[modbus.events]]\nat = 1\ndevice = 2\naction = "drain"\nrate = 0\n',
     "modbus.events[0].rate: must be greater than 0, got 0"),
    (DEVICES + '[[modbus.events]]\nat = 1\ndevice = 1\naction = "exception"\ncode = 7\n',
     "modbus.events[0].code: must be one of 1, 2, 3, 4, 5, 6, 8, 10, 11, got 7"),
    (DEVICES + '[[modbus.events]]\nat = 1\ndevice = 1\naction = "set"\n',
     "modbus.events[0].value: is required for set"),
    (DEVICES + '[[modbus.events]]\nat = 1\ndevice = 1\naction = "set"\npoint = "level"\n'
     "value = 1\n",
     "modbus.events[0].point: must be one of 'pressure', got 'level'"),
    ("[modbus]\ndevices = 3\n",
     "modbus.devices: must be an array of tables ([[devices]]), got an integer"),
])
def test_errors_name_the_key_and_allowed_values(body: str, message: str) -> None:
    assert error_of(body) == message


def test_file_errors_carry_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[modbus.devices]]\nid = 1\nprofile = "nope"\n', "utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml: modbus\.devices\[0\]\.profile: "):
        load_scenario(bad)
    bad.write_text("[modbus\n", "utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML: "):
        load_scenario(bad)
    with pytest.raises(ConfigError, match=r"cannot read \S*missing\.toml: No such file"):
        load_scenario(tmp_path / "missing.toml")


def test_device_option() -> None:
    spec = parse_device_option("7:pressure-b=0.5")
    assert (spec.id, spec.profile.key, dict(spec.initial)) == (7, "pressure-b", {"pressure": 0.5})
    assert parse_device_option("2:level").initial == {}
    for text, message in [
        ("level", "--device level: must be ID:PROFILE[=INITIAL]"),
        ("x:level", "--device x:level: ID: must be an integer 1-247, got 'x'"),
        ("300:level", "--device 300:level: ID: must be at most 247, got 300"),
        ("1:lvl", "--device 1:lvl: PROFILE: must be one of 'di-16', 'di-8', 'elec-fire'"),
        ("1:level=full", "--device 1:level=full: INITIAL: must be a number, got 'full'"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_device_option(text)
        assert str(info.value).startswith(message), text


def test_cli_devices_replace_scenario_devices() -> None:
    base = load_scenario(SAMPLE)
    merged = base.with_devices([parse_device_option("1:pressure-c"),
                                parse_device_option("9:level")])
    assert [(d.id, d.profile.key) for d in merged.devices][:1] == [(1, "pressure-c")]
    assert merged.devices[-1].id == 9
    assert merged.events == base.events
    assert Scenario(()).with_devices([]).devices == ()
