"""Contacts in the gateway config: channels of a device, contacts of a custom profile, and
one clear error naming the key for each thing an installer can get wrong."""

from __future__ import annotations

import tomllib

import pytest

from common.config import ConfigError, Table
from edge.config.modbus import ModbusDeviceConfig, parse_modbus_buses, parse_modbus_profiles
from protocols.registers import BitTable, Meaning, RegisterType

BUS = '[[modbus]]\nname = "b1"\nhost = "10.0.0.5"\n[[modbus.device]]\nunit = 7\n'


def load(text: str) -> ModbusDeviceConfig:
    root = Table(tomllib.loads(text))
    profiles = parse_modbus_profiles(root)
    return parse_modbus_buses(root.tables("modbus"), profiles)[0].devices[0]


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    return str(info.value)


def test_channels_short_and_long_forms() -> None:
    d = load(BUS + '''name = "B1 pump room"
profile = "di-16"
debounce_ms = 250
report_interval_s = 60
channels.1 = "valve:3F riser supply valve"
channels.16 = "supervisory"
channels.5 = { meaning = "valve", description = "test drain valve", normal = "closed" }
channels.6 = { meaning = "fault", description = "pump 1 trip", invert = true }
''')
    points = {b.name: b for b in d.profile.bit_points}
    assert list(points) == ["ch1", "ch5", "ch6", "ch16"]
    assert (points["ch1"].meaning, points["ch1"].table, points["ch1"].address,
            points["ch1"].description) == (Meaning.VALVE, BitTable.DISCRETE_INPUT, 0,
                                           "3F riser supply valve")
    assert points["ch16"].address == 15
    assert points["ch16"].description == "B1 pump room ch16"  # undescribed: device + name
    assert points["ch5"].normal_state is False and points["ch5"].is_abnormal(True)
    assert points["ch6"].invert and points["ch6"].state(False) is True
    assert (d.debounce_ms, d.report_interval_s) == (250.0, 60.0)
    # DI1..DI16 in one FC2 request: the module serves all its inputs
    assert [(b.table, b.start, b.count) for b in d.profile.bit_blocks()] == [
        (BitTable.DISCRETE_INPUT, 0, 16)]


def test_fixed_profile_channels_override_what_is_given() -> None:
    d = load(BUS + '''name = "pump 2"
profile = "fire-pump"
channels.3 = { invert = false }          # this cabinet reports manual = 1
channels.1 = ":pump 2 running"           # keep the meaning, describe it
''')
    run, fault, manual = d.profile.bit_points
    assert (run.meaning, run.description) == (Meaning.RUN, "pump 2 running")
    assert fault.description == "pump 2 fault"
    assert (manual.meaning, manual.invert, manual.description) == (
        Meaning.MANUAL, False, "pump 2 auto/manual")


def test_custom_profile_with_coils_register_bits_and_a_bank() -> None:
    d = load('''
[modbus_profiles.relay-io]
model = "relay board"
bit_gap = 2
channels = { table = "coil", first = 16, count = 4 }
[[modbus_profiles.relay-io.contact]]
name = "jockey_run"
meaning = "run"
table = "holding"
address = 3
bit = 7
description = "jockey pump"
[[modbus_profiles.relay-io.contact]]
name = "tank_valve"
meaning = "valve"
table = "discrete_input"
address = 2
invert = true
''' + BUS + 'profile = "relay-io"\nchannels.2 = "door:stair door"\n')
    points = {b.name: b for b in d.profile.bit_points}
    assert (points["jockey_run"].table, points["jockey_run"].bit) == (RegisterType.HOLDING, 7)
    assert points["tank_valve"].invert
    assert (points["ch2"].table, points["ch2"].address) == (BitTable.COIL, 17)
    assert [(b.register_type, b.start, b.count) for b in d.profile.read_blocks()] == [
        (RegisterType.HOLDING, 3, 1)]
    assert [(b.table, b.start, b.count) for b in d.profile.bit_blocks()] == [
        (BitTable.COIL, 17, 1), (BitTable.DISCRETE_INPUT, 2, 1)]


DEV = BUS + 'profile = "di-8"\n'
GOLDEN: list[tuple[str, str]] = [
    (DEV,
     'modbus[0].device[0].channels: di-8 reads nothing until its channels are assigned, e.g. '
     'channels.1 = "valve:3F riser supply valve"; meanings: valve, run, fault, manual, door, '
     'supervisory'),
    (DEV + 'channels.9 = "valve"\n',
     "modbus[0].device[0].channels.9: di-8 has no channel 9; channels: 1..8"),
    (DEV + 'channels.0 = "valve"\n',
     "modbus[0].device[0].channels.0: channel numbers are 1, 2, ... (the terminal numbers "
     "DI1, DI2 printed on the module)"),
    (DEV + 'channels.DI1 = "valve"\n',
     "modbus[0].device[0].channels.DI1: channel numbers are 1, 2, ... (the terminal numbers "
     "DI1, DI2 printed on the module)"),
    (DEV + 'channels.1 = "vlave:3F riser"\n',
     "modbus[0].device[0].channels.1: unknown meaning 'vlave'; meanings: valve, run, fault, "
     "manual, door, supervisory"),
    (DEV + 'channels.1 = ":3F riser"\n',
     "modbus[0].device[0].channels.1: unknown meaning ''; meanings: valve, run, fault, "
     "manual, door, supervisory"),
    (DEV + "channels.1 = true\n",
     'modbus[0].device[0].channels.1: must be "meaning:description" (e.g. "valve:3F riser '
     'supply valve") or a table { meaning = ..., description = ..., invert = ..., normal = '
     '... }; meanings: valve, run, fault, manual, door, supervisory'),
    (DEV + f'channels.1 = "valve:{"x" * 65}"\n',
     "modbus[0].device[0].channels.1: the description after ':' must be 1-64 characters, "
     "got 65"),
    (DEV + 'channels.1 = { meaning = "valve", normal = "shut" }\n',
     "modbus[0].device[0].channels.1.normal: a valve contact is 'closed' or 'open', got 'shut'"),
    (DEV + 'channels.1 = { meaning = "run", normal = "running" }\n',
     "modbus[0].device[0].channels.1: ch1: a run contact is normally stopped; one that reads "
     "running at rest is wired the other way: set invert instead of normal"),
    (DEV + 'channels.1 = { meaning = "run", invert = "yes" }\n',
     "modbus[0].device[0].channels.1.invert: must be true or false, got str"),
    (DEV + 'channels.1 = { meaning = "run", colour = "red" }\n',
     "modbus[0].device[0].channels.1.colour: unknown key; allowed here: description, "
     "invert, meaning, normal"),
    (DEV + 'channels.1 = { description = "no meaning" }\n',
     "modbus[0].device[0].channels.1.meaning: is required"),
    (DEV + 'channels.1 = "valve"\ndebounce_ms = 70000\n',
     "modbus[0].device[0].debounce_ms: must be at most 60000, got 70000"),
    (BUS + 'profile = "pressure-a"\nreport_interval_s = 60\n',
     "modbus[0].device[0].report_interval_s: only for a device with contacts; pressure-a has "
     "none"),
    (BUS + 'profile = "pressure-a"\nchannels.1 = "valve"\n',
     "modbus[0].device[0].channels.1: pressure-a has no channel 1; channels: none"),
    (BUS + 'profile = "fire-pump"\nchannels.4 = "valve"\n',
     "modbus[0].device[0].channels.4: fire-pump has no channel 4; channels: 1..3"),
    ('[modbus_profiles.x]\n[[modbus_profiles.x.contact]]\nname = "v"\nmeaning = "valve"\n'
     'table = "coil"\naddress = 1\nbit = 3\n' + BUS + 'profile = "x"\n',
     "modbus_profiles.x.contact[0].bit: only for a contact in a holding or input register; a "
     "coil has one address per contact"),
    ('[modbus_profiles.x]\n[[modbus_profiles.x.contact]]\nname = "v"\nmeaning = "valve"\n'
     'table = "holding"\naddress = 1\n' + BUS + 'profile = "x"\n',
     "modbus_profiles.x.contact[0].bit: is required"),
    ('[modbus_profiles.x]\n[[modbus_profiles.x.contact]]\nname = "v"\nmeaning = "valve"\n'
     'table = "coils"\naddress = 1\n' + BUS + 'profile = "x"\n',
     "modbus_profiles.x.contact[0].table: must be one of 'coil', 'discrete_input', "
     "'holding', 'input', got 'coils'"),
    ('[modbus_profiles.x]\n[[modbus_profiles.x.contact]]\nname = "v"\nmeaning = "valve"\n'
     'table = "coil"\naddress = 1\n[[modbus_profiles.x.contact]]\nname = "w"\n'
     'meaning = "run"\ntable = "coil"\naddress = 1\n' + BUS + 'profile = "x"\n',
     "modbus_profiles.x.contact: x: w overlaps v at coil 1"),
]


@pytest.mark.parametrize(("text", "message"), GOLDEN)
def test_golden_errors(text: str, message: str) -> None:
    assert error(text) == message
