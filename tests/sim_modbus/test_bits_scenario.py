"""Contacts in scenario files: initial states, contact actions, the pump's pressure switch,
bounce; every mistake named with its key and what is allowed. No I/O: a manual clock."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

import simulators.modbus
from common.config import ConfigError
from protocols.registers import BitPoint, BitTable, DeviceProfile, Meaning
from simulators.modbus.model import Action, ManualClock
from simulators.modbus.scenario import (
    DeviceSpec,
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
id = 7
profile = "valve-4"
[[modbus.devices]]
id = 8
profile = "di-8"
[[modbus.devices]]
id = 9
profile = "fire-pump"
"""


def error_of(body: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_scenario(tomllib.loads(body))
    return str(info.value)


def event(body: str) -> str:
    return DEVICES + "[[modbus.events]]\nat = 1\n" + body


@pytest.mark.parametrize(("body", "message"), [
    (event('device = 1\naction = "valve_close"\n'),
     "modbus.events[0].action: valve_close needs a device with a valve contact; device 1 is "
     "a pressure-a"),
    (event('device = 8\naction = "pump_fault"\n'),
     "modbus.events[0].action: pump_fault needs a device with a fault contact; device 8 is a "
     "di-8"),
    (event('device = 7\naction = "pump_start"\n'),
     "modbus.events[0].action: pump_start needs a device measuring pressure or with a run "
     "contact; device 7 is a valve-4"),
    (event('device = 7\naction = "set"\nvalue = 1\n'),
     "modbus.events[0].action: set needs a measured point; device 7 is a valve-4, which has "
     "contacts only"),
    (event('device = 1\naction = "contact"\npoint = "x"\nstate = "open"\n'),
     "modbus.events[0].action: contact needs a device with contacts; device 1 is a pressure-a"),
    (event('device = 7\naction = "valve_close"\npoint = "valve_9"\n'),
     "modbus.events[0].point: must be one of 'valve_1', 'valve_2', 'valve_3', 'valve_4', "
     "got 'valve_9'"),
    (event('device = 7\naction = "contact"\npoint = "valve_1"\nstate = "shut"\n'),
     "modbus.events[0].state: must be one of 'closed', 'open', got 'shut'"),
    (event('device = 8\naction = "contact"\npoint = "ch9"\nstate = "closed"\n'),
     "modbus.events[0].point: must be one of 'ch1', 'ch2', 'ch3', 'ch4', 'ch5', 'ch6', 'ch7', "
     "'ch8', got 'ch9'"),
    (event('device = 8\naction = "contact"\npoint = "ch1"\n'),
     "modbus.events[0].state: is required for contact"),
    (event('device = 7\naction = "valve_close"\nbounce = 51\n'),
     "modbus.events[0].bounce: must be at most 50, got 51"),
    (event('device = 7\naction = "valve_close"\nbounce = 2\nbounce_s = 0\n'),
     "modbus.events[0].bounce_s: must be greater than 0, got 0"),
    (event('device = 7\naction = "valve_close"\nbounce_s = 61\n'),
     "modbus.events[0].bounce_s: must be at most 60, got 61"),
    (event('device = 7\naction = "manual"\n'),
     "modbus.events[0].action: manual needs a device with a manual contact; device 7 is a "
     "valve-4"),
    (event('device = 7\naction = "valve_close"\nto = 1\n'),
     "modbus.events[0].to: not a parameter of valve_close; allowed here: at, device, action, "
     "point, bounce, bounce_s"),
    ('[[modbus.devices]]\nid = 7\nprofile = "valve-4"\ninitial = 1\n',
     "modbus.devices[0].initial: a valve-4 measures nothing; give its contacts' states as a "
     "table, e.g. { valve_1 = \"closed\" }"),
    ('[[modbus.devices]]\nid = 7\nprofile = "valve-4"\ninitial = { valve_1 = "ajar" }\n',
     "modbus.devices[0].initial.valve_1: must be one of 'closed', 'open', got 'ajar'"),
    ('[[modbus.devices]]\nid = 7\nprofile = "valve-4"\ninitial = { valve_5 = "open" }\n',
     "modbus.devices[0].initial.valve_5: unknown key; allowed here: valve_1, valve_2, "
     "valve_3, valve_4"),
    ('[[modbus.devices]]\nid = 1\nprofile = "pressure-a"\n'
     'auto_start = { device = 1, below = 0.2 }\n',
     "modbus.devices[0].auto_start: needs a pump controller (a device with a run contact); a "
     "pressure-a has none"),
    ('[[modbus.devices]]\nid = 9\nprofile = "fire-pump"\nauto_start = { device = 4, below = 0.2 }'
     '\n', "modbus.devices[0].auto_start.device: no device 4; defined: 9"),
    (DEVICES.replace('profile = "fire-pump"', 'profile = "fire-pump"\n'
                     'auto_start = { device = 7, below = 0.2 }'),
     "modbus.devices[3].auto_start.device: device 7 measures no pressure (a valve-4)"),
    (DEVICES.replace('profile = "fire-pump"', 'profile = "fire-pump"\n'
                     'auto_start = { device = 1, below = 0.2, point = "level" }'),
     "modbus.devices[3].auto_start.point: must be one of 'pressure', got 'level'"),
    (DEVICES.replace('profile = "fire-pump"', 'profile = "fire-pump"\n'
                     'auto_start = { device = 1, below = -1 }'),
     "modbus.devices[3].auto_start.below: must be at least 0, got -1"),
    (DEVICES.replace('profile = "fire-pump"', 'profile = "fire-pump"\n'
                     'auto_start = { device = 1, above = 0.3 }'),
     "modbus.devices[3].auto_start.below: is required"),
])
def test_contact_errors_name_the_key(body: str, message: str) -> None:
    assert error_of("[modbus]\n" + body) == message


def test_device_option_for_a_contacts_module() -> None:
    assert parse_device_option("7:valve-4").profile.key == "valve-4"
    with pytest.raises(ConfigError) as info:
        parse_device_option("7:valve-4=1")
    assert str(info.value) == "--device 7:valve-4=1: INITIAL: a valve-4 measures nothing " \
                              "(contacts only)"


def test_initial_contact_states_and_contact_actions() -> None:
    scenario = parse_scenario(tomllib.loads(
        "[modbus]\nnoise = 0\n" + DEVICES.replace(
            'profile = "valve-4"', 'profile = "valve-4"\ninitial = { valve_4 = "closed" }')
        .replace('profile = "di-8"', 'profile = "di-8"\ninitial = { ch2 = "closed" }')
        .replace('profile = "fire-pump"', 'profile = "fire-pump"\n'
                 'initial = { manual = "manual", outlet_pressure = 0.4 }')))
    clock = ManualClock()
    bus = scenario.build(clock)
    valves, di, pump = bus.devices[7], bus.devices[8], bus.devices[9]
    assert [valves.state(f"valve_{n}", 0) for n in (1, 2, 3, 4)] == [
        "open", "open", "open", "closed"]
    assert [di.state(f"ch{n}", 0) for n in (1, 2, 3)] == ["open", "closed", "open"]
    assert [pump.state(n, 0) for n in ("run", "fault", "manual")] == ["stopped", "ok", "manual"]
    # manual reads inverted: the raw "auto" bit is 0 while the selector is on manual
    assert pump.reading(0).contacts == {"run": False, "fault": False, "manual": False}
    bus.trigger(9, Action.AUTO)
    assert pump.reading(0).contacts["manual"] is True and pump.state("manual", 0) == "auto"
    bus.trigger(8, Action.CONTACT, point="ch2", state="open")
    bus.trigger(7, Action.VALVE_OPEN, point="valve_4")
    clock.advance(1.0)
    assert di.state("ch2", 1.0) == "open" and valves.state("valve_4", 1.0) == "open"
    assert valves.settled(Meaning.VALVE) is True  # the first valve, settled


def test_the_sample_story_on_a_manual_clock() -> None:
    """sample.toml: valve 3 closed at t=5 with bounce and never reopened; the hydrant opened
    at t=10 starts the pump at the exact time the pressure switch trips; the pump trips at
    40 and the pressure falls away; the pump is left in manual at 70."""
    scenario = load_scenario(SAMPLE)
    clock = ManualClock()
    bus = scenario.build(clock)
    valves, pump, hydrant = bus.devices[7], bus.devices[9], bus.devices[1]
    seen = []
    clock.advance(5.1)
    bus.advance()
    # bounce: 5.0-5.2 closed, 5.2-5.4 open, 5.4-5.6 closed ... settled closed from 6.2
    for t in (5.1, 5.3, 5.5, 5.7, 5.9, 6.1, 6.3, 30.0, 1000.0):
        seen.append(valves.state("valve_3", t))
    assert seen == ["closed", "open", "closed", "open", "closed", "open", "closed", "closed",
                    "closed"]
    trip = 10.0 + 1.5 * math.log((0.35 - 0.05) / (0.25 - 0.05))  # hydrant_open: tau 1.5 s
    clock.advance(trip - 5.1 - 1e-6)
    assert [e.action for e in bus.advance()] == [Action.HYDRANT_OPEN, Action.DRAIN]
    assert pump.state("run", clock.now()) == "stopped"
    clock.advance(2e-6)
    started = bus.advance()
    assert [(e.device, e.action) for e in started] == [(9, Action.PUMP_START),
                                                       (1, Action.PUMP_START)]
    assert started[0].at == pytest.approx(trip, abs=1e-9)  # not when it happened to be asked
    assert hydrant.value("pressure", trip) == pytest.approx(0.25)
    clock.advance(39.0 - clock.now())
    bus.advance()
    assert pump.state("run", 39.0) == "running"
    assert hydrant.value("pressure", 39.0) == pytest.approx(0.65, abs=0.01)
    assert pump.value("outlet_pressure", 39.0) == pytest.approx(0.65, abs=0.01)
    assert pump.value("inlet_pressure", 39.0) == pytest.approx(0.05)  # suction side unmoved
    clock.advance(20.0)  # t=59: tripped at 40, the hydrant still open
    bus.advance()
    assert (pump.state("run", 59.0), pump.state("fault", 59.0)) == ("stopped", "fault")
    assert hydrant.value("pressure", 59.0) == pytest.approx(0.05, abs=0.01)  # no restart
    clock.advance(20.0)  # t=79: hydrant closed at 60, manual at 70
    bus.advance()
    assert hydrant.value("pressure", 79.0) == pytest.approx(0.35, abs=0.01)
    assert pump.state("manual", 79.0) == "manual" and valves.state("valve_3", 79.0) == "closed"
    assert bus.pending == 0


def test_no_automatic_start_in_manual_and_a_restart_when_the_pressure_falls_again() -> None:
    scenario = parse_scenario(tomllib.loads(
        "[modbus]\nnoise = 0\n" + DEVICES.replace(
            'profile = "fire-pump"', 'profile = "fire-pump"\n'
            'auto_start = { device = 1, below = 0.25 }')))
    clock = ManualClock()
    bus = scenario.build(clock)
    pump = bus.devices[9]
    bus.trigger(9, Action.MANUAL)
    bus.trigger(1, Action.HYDRANT_OPEN)
    clock.advance(30.0)
    assert bus.advance() == [] and pump.state("run", 30.0) == "stopped"
    bus.trigger(9, Action.AUTO)  # the pressure is still low: the switch starts it at once
    started = bus.advance()  # (what any request does first)
    assert [(e.at, e.device, e.action) for e in started] == [
        (30.0, 9, Action.PUMP_START), (30.0, 1, Action.PUMP_START)]
    assert pump.state("run", 30.0) == "running"
    clock.advance(30.0)  # the pressure has recovered: a stop holds
    bus.trigger(9, Action.PUMP_STOP)
    assert bus.advance() == [] and pump.state("run", 60.0) == "stopped"
    clock.advance(5.0)  # and the hydrant, still open, pulls it down again: a restart
    assert [e.action for e in bus.advance()] == [Action.PUMP_START, Action.PUMP_START]
    assert pump.state("run", clock.now()) == "running"


def test_a_fan_controller_with_contacts_only_starts_trips_and_stops() -> None:
    """pump_start / pump_fault / pump_stop on a device without a pressure point move only its
    contacts (a fan's run and trip relays)."""
    fan = DeviceProfile("fan", "fan", "coils", (), bit_points=(
        BitPoint("run", Meaning.RUN, BitTable.COIL, 15),
        BitPoint("trip", Meaning.FAULT, BitTable.COIL, 16)))
    bus = Scenario((DeviceSpec(3, fan, "fan"),), noise=0.0).build(ManualClock())
    dev = bus.devices[3]
    bus.trigger(3, Action.PUMP_START)
    assert (dev.state("run", 0), dev.state("trip", 0)) == ("running", "ok")
    bus.trigger(3, Action.PUMP_FAULT)
    assert (dev.state("run", 0), dev.state("trip", 0)) == ("stopped", "fault")
    bus.trigger(3, Action.CONTACT, point="trip", state="ok")
    bus.trigger(3, Action.PUMP_START)
    bus.trigger(3, Action.PUMP_STOP)
    assert (dev.state("run", 0), dev.state("trip", 0)) == ("stopped", "ok")
    assert dev.reading(0).contacts == {"run": False, "trip": False}
