"""The ``[panel]`` scenario table: the sample file, defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError
from protocols.gb26875 import HIKVISION, ComponentAddress
from simulators.panel import ACTIONS, PanelSpec, load_scenario, parse_scenario
from simulators.panel.scenario import parse_event_option
from simulators.panel.timeline import NEVER

SAMPLE = Path(__file__).resolve().parents[2] / "simulators" / "panel" / "sample.toml"


def test_the_sample_scenario_loads() -> None:
    cfg = load_scenario(SAMPLE)
    assert cfg.baud == 9600 and cfg.check_post_answer == 20
    assert [c.id for c in cfg.components] == ["smoke-3F-east", "callpoint-3F", "io-module-fan",
                                              "riser-pressure"]
    smoke = cfg.components[0]
    assert smoke.address == ComponentAddress.from_loop_point(3, 1)
    assert smoke.description == "3F 东侧走廊" and smoke.type == 42
    assert [e.at for e in cfg.events] == sorted(e.at for e in cfg.events)
    assert {e.action for e in cfg.events} <= set(ACTIONS)


def test_only_the_panel_table_is_read(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("""
[modbus]
noise = 0
[[modbus.devices]]
id = 1
profile = "pressure-a"

[ble]
anything = "goes"

[panel]
profile = "hikvision"
check_post_answer = "never"
[[panel.events]]
at = 5
action = "fire_alarm"
component = 3001          # by address
""", encoding="utf-8")
    cfg = load_scenario(path)
    assert cfg.profile is HIKVISION and cfg.check_post_answer == NEVER
    assert cfg.events[0].component == "smoke-3F-east"  # the built-in components


def test_defaults_without_a_panel_table(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("[modbus]\n", encoding="utf-8")
    cfg = load_scenario(path).with_defaults()
    assert cfg == PanelSpec().with_defaults()
    assert {s.key for s in cfg.systems} == {(1, 1), (11, 1)}
    assert cfg.confirm_timeout == 10 and cfg.retries == 3


@pytest.mark.parametrize(("panel", "message"), [
    ({"profil": "standard"},
     "panel.profil: unknown key; allowed here: baud, centre_address, check_post_answer, "
     "components, confirm_timeout, events, faults, keepalive_interval, normal_bit, "
     "periodic_interval, profile, retries, start_time, systems, uitd_address, "
     "uitd_description, uitd_operator, uitd_version"),
    ({"profile": "hikvison"},
     "panel.profile: must be one of 'dahua', 'extra-time-labels', 'handshake', 'hikvision', "
     "'no-time-labels', 'standard', got 'hikvison'"),
    ({"confirm_timeout": 12},
     "panel.confirm_timeout: must be at most 10, got 12"),
    ({"confirm_timeout": 0},
     "panel.confirm_timeout: must be greater than 0, got 0"),
    ({"retries": -1}, "panel.retries: must be at least 0, got -1"),
    ({"check_post_answer": "later"},
     "panel.check_post_answer: must be seconds or \"never\", got 'later'"),
    ({"start_time": "yesterday"},
     "panel.start_time: must be a date-time like 2024-05-01T08:00:00, got 'yesterday'"),
    ({"uitd_version": "2"}, "panel.uitd_version: must be \"MAJOR.MINOR\" (each 0-255), got '2'"),
    ({"components": [{"type": 42, "address": 1,
                      "description": "三楼东侧走廊感烟探测器一号点位A2"}]},
     "panel.components[0].description: must be at most 31 bytes in GB 18030 (a Chinese "
     "character takes 2), got 32: '三楼东侧走廊感烟探测器一号点位A2'"),
    ({"components": [{"type": 42}]}, "panel.components[0].address: is required"),
    ({"components": [{"type": 42, "address": [1, 2, 3]}]},
     "panel.components[0].address: must be [loop, point] (each 0-65535), got [1, 2, 3]"),
    ({"components": [{"id": "a", "type": 42, "address": 1}, {"id": "a", "type": 23,
                                                              "address": 2}]},
     "panel.components[1]: duplicate component id 'a'"),
    ({"components": [{"type": 99, "address": 1, "analog_type": 5, "value": 4000}]},
     "panel.components[0].value: 4000 kPa does not fit the signed 16-bit value (raw 40000 at "
     "resolution 0.1)"),
    ({"events": [{"at": 1, "action": "fire"}]},
     "panel.events[0].action: must be one of " + ", ".join(repr(a) for a in ACTIONS)
     + ", got 'fire'"),
    ({"events": [{"action": "fire_alarm", "component": "smoke-3F-east"}]},
     "panel.events[0].at: is required"),
    ({"events": [{"at": 1, "action": "fire_alarm", "component": "smoke-3f-east"}]},
     "panel.events[0].component: no component 'smoke-3f-east'; known: smoke-3F-east, "
     "heat-3F-kitchen, callpoint-3F-stairs, module-pump-room, pressure-roof"),
    ({"events": [{"at": 1, "action": "fire_alarm"}]},
     "panel.events[0].component: is required for fire_alarm"),
    ({"events": [{"at": 1, "action": "analog", "component": "pressure-roof", "vlaue": 3}]},
     "panel.events[0].vlaue: unknown key for analog; allowed here: at, action, component, "
     "value, analog_type"),
    ({"events": [{"at": 1, "action": "analog", "component": "smoke-3F-east", "value": 3}]},
     "panel.events[0].analog_type: is required, as component smoke-3F-east has no "
     "analog_type"),
    ({"events": [{"at": 1, "action": "restore"}]},
     "panel.events[0]: restore needs exactly one of: component, system_type/system_address, "
     "uitd = true"),
    ({"events": [{"at": 1, "action": "link_loss"}]},
     "panel.events[0].duration: is required for link_loss"),
    ({"events": [{"at": 1, "action": "silence", "system_type": 12}]},
     "panel.events[0].system_type: no system 12/1; known: 1/1, 11/1"),
    ({"faults": {"garbage": 2}}, "panel.faults.garbage: must be at most 1, got 2"),
])
def test_errors_name_the_key_and_the_allowed_values(panel: dict[str, object],
                                                    message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_scenario(panel)
    assert str(info.value) == message


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[panel]\nbaud = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml: panel\.baud: must be at least 1"):
        load_scenario(path)
    path.write_text("[panel\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_scenario(path)


def test_cli_shortcuts() -> None:
    cfg = PanelSpec()
    first = parse_event_option(cfg, "fire_alarm", "5", "--fire-alarm-at")
    assert (first.at, first.action, first.component) == (5.0, "fire_alarm", "smoke-3F-east")
    other = parse_event_option(cfg, "fault", "20:module-pump-room", "--fault-at")
    assert other.component == "module-pump-room"
    by_address = parse_event_option(cfg, "fault", "20:3010", "--fault-at")
    assert by_address.component == "callpoint-3F-stairs"
    assert parse_event_option(cfg, "reset", "60", "--reset-at").component is None
    with pytest.raises(ConfigError, match=r"--fire-alarm-at: must be AT\[:COMPONENT\]"):
        parse_event_option(cfg, "fire_alarm", "soon", "--fire-alarm-at")
    with pytest.raises(ConfigError, match="--reset-at: reset takes no component"):
        parse_event_option(cfg, "reset", "1:smoke-3F-east", "--reset-at")
