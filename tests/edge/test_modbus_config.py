"""``[[modbus]]`` and ``[modbus_profiles.*]`` parsing: defaults, the sample, golden errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from common.config import ConfigError, Table
from edge.config.modbus import (
    ModbusBusConfig,
    ModbusDeviceConfig,
    min_gap_ms,
    parse_modbus,
    parse_modbus_buses,
    parse_modbus_profiles,
)
from protocols.registers import (
    DataType,
    DeviceProfile,
    Quantity,
    RegisterType,
    Unit,
    WordOrder,
    get_profile,
)

REPO = Path(__file__).resolve().parents[2]
# The sample lives outside the repo until the lead merges it into edge/gateway.example.toml;
# from then on the merged file is the one checked.
EXAMPLE = REPO / "edge" / "gateway.example.toml"
SAMPLE = Path("/tmp/brief/out/modbus.toml")


def sample_text() -> str:
    if EXAMPLE.exists() and "[[modbus]]" in EXAMPLE.read_text("utf-8"):
        return EXAMPLE.read_text("utf-8")
    return SAMPLE.read_text("utf-8")


def bus(text: str, profiles: dict[str, DeviceProfile] | None = None) -> ModbusBusConfig:
    """Parse the first [[modbus]] of a TOML snippet."""
    doc = tomllib.loads(text)
    return parse_modbus(Table(doc).tables("modbus")[0], profiles)


def error(text: str) -> str:
    """The full error message of a snippet that must not parse (custom profiles included)."""
    doc = tomllib.loads(text)
    with pytest.raises(ConfigError) as info:
        root = Table(doc)
        profiles = parse_modbus_profiles(root)
        parse_modbus_buses(root.tables("modbus"), profiles)
    return str(info.value)


RTU = """
[[modbus]]
name = "bus1"
port = "/dev/ttyUSB0"
[[modbus.device]]
unit = 3
profile = "pressure-a"
"""


def test_rtu_defaults() -> None:
    cfg = bus(RTU)
    assert cfg == ModbusBusConfig(
        name="bus1", port="/dev/ttyUSB0", baud=9600, parity="N", bytesize=8, stopbits=1,
        host=None, tcp_port=502, timeout_s=0.5, retries=0, gap_ms=20.0, reopen_max_s=30.0,
        devices=(ModbusDeviceConfig(unit=3, name="pressure-a-3",
                                    profile=get_profile("pressure-a"), interval_s=5.0,
                                    offline_after=3, backoff_max_s=300.0),))
    assert not cfg.is_tcp
    assert cfg.endpoint == "/dev/ttyUSB0 9600 8N1"


def test_tcp_bus() -> None:
    cfg = bus("""
[[modbus]]
name = "pumproom"
host = "192.168.1.50"
tcp_port = 1502
timeout_s = 1
retries = 2
gap_ms = 0
[[modbus.device]]
unit = 247
name = "泵房配电箱"
profile = "elec-fire"
interval_s = 0.5
offline_after = 5
backoff_max_s = 60
""")
    assert cfg.is_tcp and cfg.port is None
    assert (cfg.host, cfg.tcp_port, cfg.timeout_s, cfg.retries, cfg.gap_ms) == (
        "192.168.1.50", 1502, 1.0, 2, 0.0)
    assert cfg.endpoint == "192.168.1.50:1502"
    (d,) = cfg.devices
    assert (d.unit, d.name, d.profile.key, d.interval_s, d.offline_after, d.backoff_max_s) == (
        247, "泵房配电箱", "elec-fire", 0.5, 5, 60.0)


def test_sample_is_accepted() -> None:
    root = Table(tomllib.loads(sample_text()))
    profiles = parse_modbus_profiles(root)
    buses = parse_modbus_buses(root.tables("modbus"), profiles)
    assert [b.name for b in buses] == ["bus1"]
    first, second, contacts = buses[0].devices
    assert [(b.name, b.meaning.value, b.invert, b.description)
            for b in contacts.profile.bit_points] == [
        ("ch1", "valve", False, "B1 wet riser supply valve"),
        ("ch2", "run", False, "fire pump 1"),
        ("ch3", "fault", True, "fire pump 1 fault"),
        ("ch4", "manual", False, "fire pump 1 auto/manual")]
    assert (contacts.debounce_ms, contacts.report_interval_s) == (500.0, 300.0)
    assert first.profile.point("pressure").maximum == 1.2  # range override applied
    assert first.profile.point("pressure").minimum == 0.0
    assert get_profile("pressure-a").point("pressure").maximum == 1.6  # built-in untouched
    assert second.profile is profiles["tank-level-f32"]
    level = second.profile.point("level")
    assert (level.register_type, level.data_type, level.word_order, level.unit) == (
        RegisterType.INPUT, DataType.F32, WordOrder.LITTLE, Unit.METRE)
    assert second.profile.status_words[0].bits == {0: "sensor_fault", 1: "echo_lost"}


def test_custom_profile_fields_and_merged_reads() -> None:
    root = Table(tomllib.loads("""
[modbus_profiles.dual]
[[modbus_profiles.dual.point]]
name = "inlet"
quantity = "pressure"
unit = "kPa"
address = 10
type = "i32"
scale = 0.1
offset = -5
min = 0
max = 1600
[[modbus_profiles.dual.point]]
name = "outlet"
quantity = "pressure"
address = 12
min = 0
max = 1.6
[[modbus_profiles.dual.status]]
name = "flags"
address = 13
bits = { 15 = "sensor_fault" }
"""))
    profiles = parse_modbus_profiles(root)
    dual = profiles["dual"]
    inlet, outlet = dual.points
    assert (inlet.quantity, inlet.unit, inlet.data_type, inlet.scale, inlet.offset,
            inlet.word_order) == (Quantity.PRESSURE, Unit.KPA, DataType.I32, 0.1, -5.0,
                                  WordOrder.BIG)
    assert outlet.unit is Unit.MPA  # the canonical unit when none is given
    assert dual.model == "dual"
    # adjacent fields: one request for all three
    assert [(b.register_type, b.start, b.count) for b in dual.read_blocks()] == [
        (RegisterType.HOLDING, 10, 4)]
    cfg = bus('[[modbus]]\nname = "b"\nhost = "h"\n[[modbus.device]]\nunit = 1\n'
              'profile = "dual"\n', profiles)
    assert cfg.devices[0].profile is dual


def test_min_gap_follows_the_serial_line_spec() -> None:
    assert min_gap_ms(9600) == pytest.approx(3.5 * 10 / 9.6)  # 8N1: 10 bits a character
    assert min_gap_ms(9600, "E") == pytest.approx(3.5 * 11 / 9.6)
    assert min_gap_ms(9600, "N", 8, 2) == pytest.approx(3.5 * 11 / 9.6)
    assert min_gap_ms(38400) == 1.75


def test_gap_at_the_minimum_is_accepted() -> None:
    assert bus(RTU.replace('port = "/dev/ttyUSB0"',
                           'port = "/dev/ttyUSB0"\nbaud = 115200\ngap_ms = 1.75')).gap_ms == 1.75


GOLDEN: list[tuple[str, str]] = [
    (RTU.replace('profile = "pressure-a"', 'profile = "presure-a"'),
     "modbus[0].device[0].profile: unknown profile 'presure-a'; built-in: di-16, di-8, "
     "elec-fire, fire-pump, level, level-cm, pressure-a, pressure-b, pressure-c, valve-4; "
     "custom: none"),
    (RTU.replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nhost = "10.0.0.1"'),
     "modbus[0].host: give either port (Modbus RTU serial line) or host (Modbus TCP), not "
     "both"),
    (RTU.replace('port = "/dev/ttyUSB0"', ''),
     "modbus[0].port: is required: give port (Modbus RTU serial line, e.g. /dev/ttyUSB0) or "
     "host (Modbus TCP)"),
    (RTU.replace('port = "/dev/ttyUSB0"', 'host = "10.0.0.1"\nbaud = 19200'),
     "modbus[0].baud: only for Modbus RTU (port); this bus is Modbus TCP (host)"),
    (RTU.replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\ntcp_port = 502'),
     "modbus[0].tcp_port: only for Modbus TCP (host); this bus is RTU (port)"),
    (RTU.replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nparity = "E"\ngap_ms = 2'),
     "modbus[0].gap_ms: must be at least 4.01 ms at 9600 baud (3.5 character times, Modbus "
     "over Serial Line V1.02 §2.5.1.1), got 2"),
    (RTU.replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nbytesize = 7'),
     "modbus[0].bytesize: Modbus RTU uses 8 data bits (Modbus over Serial Line V1.02 §2.5.1); "
     "7 is Modbus ASCII, which firegate does not speak"),
    (RTU.replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nparity = "X"'),
     "modbus[0].parity: must be one of 'N', 'E', 'O', got 'X'"),
    (RTU.replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nretries = 5'),
     "modbus[0].retries: must be at most 3, got 5"),
    (RTU.replace('name = "bus1"', 'name = "bus 1"'),
     "modbus[0].name: must be 1-32 letters, digits, '_', '.' or '-' (it is part of source "
     "ids), got 'bus 1'"),
    (RTU.replace("unit = 3", "unit = 248"),
     "modbus[0].device[0].unit: must be at most 247, got 248"),
    (RTU + '[[modbus.device]]\nunit = 3\nprofile = "level"\n',
     "modbus[0].device[1].unit: unit 3 is already used by device[0] on this bus"),
    (RTU.replace("unit = 3", "unit = 3\ninterval_s = 10\nbackoff_max_s = 5"),
     "modbus[0].device[0].backoff_max_s: must be at least interval_s (10), got 5"),
    (RTU.replace("unit = 3", "unit = 3\ninterval_s = 0"),
     "modbus[0].device[0].interval_s: must be at least 0.05, got 0"),
    (RTU.replace("unit = 3", "unit = 3\npoll_s = 1"),
     "modbus[0].device[0].poll_s: unknown key; allowed here: backoff_max_s, channels, "
     "debounce_ms, interval_s, name, offline_after, profile, range, report_interval_s, unit"),
    (RTU.replace("unit = 3", "unit = 3\nrange.presure = { max = 1 }"),
     "modbus[0].device[0].range.presure: pressure-a has no point 'presure'; points: pressure"),
    (RTU.replace("unit = 3", "unit = 3\nrange.pressure = { min = 1.0, max = 0.5 }"),
     "modbus[0].device[0].range.pressure.max: must be greater than min (1 MPa), got 0.5"),
    ('[[modbus]]\nname = "bus1"\nport = "/dev/ttyUSB0"\n',
     "modbus[0].device: a bus needs at least one [[modbus.device]]"),
    (RTU + RTU.replace("ttyUSB0", "ttyUSB1"),
     "modbus[1].name: bus name 'bus1' is already used by modbus[0]"),
    (RTU + RTU.replace("bus1", "bus2"),
     "modbus[1].port: /dev/ttyUSB0 is already used by modbus[0]: one master per bus, so put "
     "all its devices in one [[modbus]]"),
]

PROFILE = """
[modbus_profiles.mine]
[[modbus_profiles.mine.point]]
name = "level"
quantity = "level"
address = 0
min = 0
max = 5
"""

GOLDEN_PROFILES: list[tuple[str, str]] = [
    (PROFILE + RTU.replace("pressure-a", "yours"),
     "modbus[0].device[0].profile: unknown profile 'yours'; built-in: di-16, di-8, "
     "elec-fire, fire-pump, level, level-cm, pressure-a, pressure-b, pressure-c, valve-4; "
     "custom: mine"),
    (PROFILE.replace("mine", "level"),
     "modbus_profiles.level: 'level' is a built-in profile; give the custom one another key"),
    (PROFILE.replace("mine", "Mine"),
     "modbus_profiles.Mine: profile key must be 1-32 lower-case letters, digits, '_' or '-', "
     "got 'Mine'"),
    (PROFILE.replace('quantity = "level"', 'quantity = "level"\nunit = "kPa"'),
     "modbus_profiles.mine.point[0].unit: must be a unit of level: 'm', got 'kPa'"),
    (PROFILE.replace('quantity = "level"', 'quantity = "flow"'),
     "modbus_profiles.mine.point[0].quantity: must be one of 'pressure', 'level', "
     "'temperature', 'residual_current', got 'flow'"),
    (PROFILE.replace("address = 0", 'address = 0\ntype = "f64"'),
     "modbus_profiles.mine.point[0].type: must be one of 'u16', 'i16', 'u32', 'i32', 'f32', "
     "got 'f64'"),
    (PROFILE.replace("address = 0", 'address = 65535\ntype = "u32"'),
     "modbus_profiles.mine.point[0].address: must be at most 65534, got 65535"),
    (PROFILE.replace("address = 0", "address = 0\nscale = 0"),
     "modbus_profiles.mine.point[0].scale: must not be 0"),
    (PROFILE.replace("max = 5", "max = 0"),
     "modbus_profiles.mine.point[0].max: must be greater than min (0), got 0"),
    (PROFILE.replace('name = "level"', 'name = "Level 1"'),
     "modbus_profiles.mine.point[0].name: must be 1-32 lower-case letters, digits or '_', "
     "starting with a letter, got 'Level 1'"),
    (PROFILE.replace("max = 5", "max = 5\nbits = 1"),
     "modbus_profiles.mine.point[0].bits: unknown key; allowed here: address, description, "
     "max, min, name, offset, quantity, register, scale, type, unit, word_order"),
    (PROFILE + PROFILE.split("\n", 2)[2].replace('name = "level"', 'name = "level2"'),
     "modbus_profiles.mine.point: mine: level2 overlaps level at holding 0"),
    ('[modbus_profiles.mine]\nmodel = "x"\n',
     "modbus_profiles.mine.point: a profile needs at least one "
     "[[modbus_profiles.<key>.point]] or [[modbus_profiles.<key>.contact]], or channels"),
    (PROFILE + '[[modbus_profiles.mine.status]]\nname = "s"\naddress = 1\nbits = { 16 = "x" }\n',
     "modbus_profiles.mine.status[0].bits.16: bit numbers must be 0..15 (0 = least "
     "significant)"),
    (PROFILE + '[[modbus_profiles.mine.status]]\nname = "s"\naddress = 1\n'
               'bits = { 0 = "x", 1 = "x" }\n',
     "modbus_profiles.mine.status[0].bits.1: bit name 'x' is used twice"),
    (PROFILE + '[[modbus_profiles.mine.status]]\nname = "s"\naddress = 1\n',
     "modbus_profiles.mine.status[0].bits: is required"),
]


@pytest.mark.parametrize(("text", "message"), GOLDEN + GOLDEN_PROFILES)
def test_golden_errors(text: str, message: str) -> None:
    assert error(text) == message


def test_range_override_keeps_the_other_bound() -> None:
    cfg = bus(RTU.replace("unit = 3", "unit = 3\nrange.pressure = { max = 1.0 }"))
    point = cfg.devices[0].profile.point("pressure")
    assert (point.minimum, point.maximum) == (0.0, 1.0)
    assert cfg.devices[0].profile.status_words == get_profile("pressure-a").status_words


def test_parser_reads_every_key_through_the_table() -> None:
    # an unknown top-level key of a bus is refused, naming the allowed ones (for an RTU bus:
    # not tcp_port, which is refused with its own message)
    doc: dict[str, Any] = tomllib.loads(RTU.replace('name = "bus1"', 'name = "bus1"\nspeed = 1'))
    with pytest.raises(ConfigError) as info:
        parse_modbus(Table(doc).tables("modbus")[0])
    assert str(info.value) == (
        "modbus[0].speed: unknown key; allowed here: baud, bytesize, device, gap_ms, host, "
        "name, parity, port, reopen_max_s, retries, stopbits, timeout_s")
