"""``[[panel]]`` parsing: defaults, every key, and the exact text of each error."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from common.config import ConfigError, Table
from edge.config.panel import ComponentKey, LinkKind, PanelConfig, parse_panel, parse_panels

# The commented [[panel]] sample of edge/gateway.example.toml; it must parse to the defaults.
SAMPLE = """
[[panel]]
name = "com1"                   # link name: the driver and its link state are "panel/com1"
port = "/dev/ttyUSB0"           # serial device (use /dev/serial/by-id/... for a stable name)
# connect = "192.168.1.50:5000" # ... or dial a UITD / serial server that listens (TCP client)
# listen = "0.0.0.0:5000"       # ... or listen for the UITD to dial in (TCP server)
baud = 9600                     # serial only: speed, most panels use 9600
bytesize = 8                    # serial only: 5-8 data bits
parity = "none"                 # serial only: none, even, odd, mark, space
stopbits = 1                    # serial only: 1, 1.5 or 2
profile = "standard"            # dialect: standard, hikvision, dahua, handshake,
                                # extra-time-labels, no-time-labels (docs/gb26875.md)
centre_address = 0              # our 6-byte address as an integer (profile's byte order)
# uitd_address = 0x0379         # the UITD's address; default: learnt from its first frame
systems = ["1-1"]               # systems ("TYPE-ADDRESS") read with 61 besides those seen;
                                # 1-1 = fire alarm system 1 (表4)
components = []                 # components ("TYPE-ADDRESS/COMPONENT", e.g. "1-1/0x00000bb9")
                                # read with 62, besides those last seen in alarm or fault
silence_timeout_s = 90          # no valid frame this long = monitoring-line fault (link_fault
                                # event, link down, reopen); 90 s keeps within the 100 s rule
probe_after_s = 30              # when quiet this long, read the UITD state (81) so a live panel
                                # answers; 0 = never; must be below silence_timeout_s
request_timeout_s = 10          # wait this long for an answer before resending (<= 10, §6.5.4)
retries = 3                     # resends of an unanswered read or control (§6.5.5)
clock_sync_interval_s = 3600    # set the panel clock (type 90) on connect and this often; 0 = off
read_state_on_connect = true    # read system (61), component (62) and UITD (81) state at start
                                # and after every reconnect
reopen_min_s = 1                # back-off between reopen attempts: doubles from min ...
reopen_max_s = 60               # ... to max, with jitter
source_prefix = "panel"         # source ids: <prefix>/1-1/42-0x00000bb9; give each panel its own
# timezone = "Asia/Shanghai"    # zone of the panel clock (time labels carry none);
                                # default: the gateway's zone
report_test_mode = false        # raise test_mode when state bit 0 is clear (many panels always
                                # send it clear, so off by default)
"""

KEYS = ("baud, bytesize, centre_address, clock_sync_interval_s, components, connect, listen, "
        "name, parity, port, probe_after_s, profile, read_state_on_connect, reopen_max_s, "
        "reopen_min_s, report_test_mode, request_timeout_s, retries, silence_timeout_s, "
        "source_prefix, stopbits, systems, timezone, uitd_address")


def parse(**table: Any) -> PanelConfig:
    return parse_panel(Table(table, "panel[0]"))


def error(**table: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(**table)
    return str(info.value)


def test_the_sample_parses_to_the_defaults() -> None:
    (cfg,) = parse_panels(Table(tomllib.loads(SAMPLE)))
    assert cfg == PanelConfig(name="com1", port="/dev/ttyUSB0")
    assert cfg.kind is LinkKind.SERIAL and cfg.link_name == "panel/com1"


def test_defaults_a_field_site_expects() -> None:
    cfg = parse(name="com1", port="/dev/ttyS0")
    assert (cfg.baud, cfg.bytesize, cfg.parity, cfg.stopbits) == (9600, 8, "N", 1.0)
    assert cfg.profile == "standard" and cfg.systems == ((1, 1),) and cfg.components == ()
    assert cfg.silence_timeout_s == 90 and cfg.probe_after_s == 30
    assert cfg.request_timeout_s == 10 and cfg.retries == 3
    assert cfg.clock_sync_interval_s == 3600 and cfg.read_state_on_connect
    assert (cfg.reopen_min_s, cfg.reopen_max_s) == (1, 60)
    assert cfg.source_prefix == "panel" and cfg.uitd_address is None and cfg.timezone is None


def test_every_key_is_read() -> None:
    cfg = parse(name="gw.A-1", connect="10.0.0.5:5000", profile="hikvision",
                centre_address=0xFFFFFFFFFFFF, uitd_address=0x379, systems=["1-1", "11-2", "1-1"],
                components=["1-1/3001", "11-2/0x00000BB9"], silence_timeout_s=20,
                probe_after_s=0, request_timeout_s=2.5, retries=0, clock_sync_interval_s=0,
                read_state_on_connect=False, reopen_min_s=0.5, reopen_max_s=5,
                source_prefix="site/b2/panel", timezone="Asia/Shanghai", report_test_mode=True)
    assert cfg.kind is LinkKind.TCP_CLIENT and cfg.connect == ("10.0.0.5", 5000)
    assert cfg.systems == ((1, 1), (11, 2))
    assert cfg.components == (ComponentKey(1, 1, 3001), ComponentKey(11, 2, 3001))
    assert (cfg.centre_address, cfg.uitd_address) == (0xFFFFFFFFFFFF, 0x379)
    assert (cfg.silence_timeout_s, cfg.probe_after_s, cfg.request_timeout_s) == (20, 0, 2.5)
    assert (cfg.retries, cfg.clock_sync_interval_s, cfg.read_state_on_connect) == (0, 0, False)
    assert cfg.source_prefix == "site/b2/panel" and cfg.timezone == "Asia/Shanghai"
    assert cfg.report_test_mode and cfg.profile == "hikvision"
    serial = parse(name="a", port="/dev/ttyS1", baud=19200, bytesize=7, parity="even",
                   stopbits=2)
    assert (serial.baud, serial.bytesize, serial.parity, serial.stopbits) == (19200, 7, "E", 2)
    server = parse(name="b", listen="127.0.0.1:0")
    assert server.kind is LinkKind.TCP_SERVER and server.listen == ("127.0.0.1", 0)


@pytest.mark.parametrize(("table", "message"), [
    ({"port": "/dev/x"}, "panel[0].name: is required"),
    ({"name": "com 1", "port": "/dev/x"},
     "panel[0].name: must be 1-32 characters of A-Z a-z 0-9 _ . -, starting with a letter or "
     "digit, got 'com 1'"),
    ({"name": "a"},
     "panel[0]: give exactly one of port (serial device), connect (HOST:PORT of a UITD) or "
     "listen (HOST:PORT for the UITD to dial)"),
    ({"name": "a", "port": "/dev/x", "listen": "0.0.0.0:5000"},
     "panel[0].listen: give exactly one of port (serial device), connect (HOST:PORT of a UITD) "
     "or listen (HOST:PORT for the UITD to dial)"),
    ({"name": "a", "connect": "uitd.local"},
     "panel[0].connect: must be HOST:PORT with a port 1-65535, got 'uitd.local'"),
    ({"name": "a", "connect": "uitd.local:0"},
     "panel[0].connect: must be HOST:PORT with a port 1-65535, got 'uitd.local:0'"),
    ({"name": "a", "listen": "0.0.0.0:70000"},
     "panel[0].listen: must be HOST:PORT with a port 0-65535, got '0.0.0.0:70000'"),
    ({"name": "a", "listen": "0.0.0.0:5000", "baud": 9600},
     "panel[0].baud: only applies to a serial port (give port, not connect/listen)"),
    ({"name": "a", "port": "/dev/x", "baud": "9600"},
     "panel[0].baud: must be an integer, got a string"),
    ({"name": "a", "port": "/dev/x", "parity": "N"},
     "panel[0].parity: must be one of 'none', 'even', 'odd', 'mark', 'space', got 'N'"),
    ({"name": "a", "port": "/dev/x", "stopbits": 3},
     "panel[0].stopbits: must be 1, 1.5 or 2, got 3"),
    ({"name": "a", "port": "/dev/x", "profile": "hik"},
     "panel[0].profile: must be one of 'standard', 'hikvision', 'dahua', 'handshake', "
     "'extra-time-labels', 'no-time-labels', got 'hik'"),
    ({"name": "a", "port": "/dev/x", "uitd_address": 1 << 48},
     "panel[0].uitd_address: must be a 6-byte address 0-281474976710655 (0xFFFFFFFFFFFF), "
     "got 281474976710656"),
    ({"name": "a", "port": "/dev/x", "centre_address": -1},
     "panel[0].centre_address: must be a 6-byte address 0-281474976710655 (0xFFFFFFFFFFFF), "
     "got -1"),
    ({"name": "a", "port": "/dev/x", "systems": ["1/1"]},
     "panel[0].systems[0]: must be 'TYPE-ADDRESS' (system type and address, 0-255), got '1/1'"),
    ({"name": "a", "port": "/dev/x", "systems": ["1-256"]},
     "panel[0].systems[0]: '1-256': 256 does not fit one byte (0-255)"),
    ({"name": "a", "port": "/dev/x", "systems": "1-1"},
     "panel[0].systems: must be an array of strings, got a string"),
    ({"name": "a", "port": "/dev/x", "components": ["1-1", "1-1/3001"]},
     "panel[0].components[0]: must be 'TYPE-ADDRESS/COMPONENT' (e.g. '1-1/3001' or "
     "'1-1/0x00000bb9'), got '1-1'"),
    ({"name": "a", "port": "/dev/x", "components": ["1-1/4294967296"]},
     "panel[0].components[0]: '1-1/4294967296': component address 4294967296 is not a uint32"),
    ({"name": "a", "port": "/dev/x", "silence_timeout_s": 0.5},
     "panel[0].silence_timeout_s: must be at least 1, got 0.5"),
    ({"name": "a", "port": "/dev/x", "silence_timeout_s": 20, "probe_after_s": 20},
     "panel[0].probe_after_s: must be less than silence_timeout_s (20) so a quiet panel is "
     "asked before it counts as lost, got 20"),
    ({"name": "a", "port": "/dev/x", "request_timeout_s": 30},
     "panel[0].request_timeout_s: must be at most 10, got 30"),
    ({"name": "a", "port": "/dev/x", "request_timeout_s": 0},
     "panel[0].request_timeout_s: must be greater than 0, got 0"),
    ({"name": "a", "port": "/dev/x", "retries": 11},
     "panel[0].retries: must be at most 10, got 11"),
    ({"name": "a", "port": "/dev/x", "clock_sync_interval_s": -1},
     "panel[0].clock_sync_interval_s: must be at least 0, got -1"),
    ({"name": "a", "port": "/dev/x", "read_state_on_connect": "yes"},
     "panel[0].read_state_on_connect: must be true or false, got a string"),
    ({"name": "a", "port": "/dev/x", "reopen_min_s": 10, "reopen_max_s": 5},
     "panel[0].reopen_max_s: must be at least reopen_min_s (10), got 5"),
    ({"name": "a", "port": "/dev/x", "source_prefix": "panel/"},
     "panel[0].source_prefix: must be segments of A-Z a-z 0-9 _ . - separated by '/', "
     "got 'panel/'"),
    ({"name": "a", "port": "/dev/x", "timezone": "Mars/Olympus"},
     "panel[0].timezone: unknown time zone 'Mars/Olympus' (an IANA name such as "
     "'Asia/Shanghai')"),
    ({"name": "a", "port": "/dev/x", "speed": 9600},
     f"panel[0].speed: unknown key; allowed here: {KEYS}"),
])
def test_errors_name_the_key_and_what_is_allowed(table: dict[str, Any], message: str) -> None:
    assert error(**table) == message


def test_panels_need_their_own_name_and_source_prefix() -> None:
    two = {"panel": [{"name": "com1", "port": "/dev/a"}, {"name": "com1", "port": "/dev/b"}]}
    with pytest.raises(ConfigError) as info:
        parse_panels(Table(two))
    assert str(info.value) == "panel[1].name: 'com1' is already used by panel[0]"
    two["panel"][1]["name"] = "com2"
    with pytest.raises(ConfigError) as info:
        parse_panels(Table(two))
    assert str(info.value) == ("panel[1].source_prefix: 'panel' is already used by panel[0] "
                               "(com1); give each panel its own, e.g. 'panel/com2'")
    two["panel"][1]["source_prefix"] = "panel/com2"
    assert [p.source_prefix for p in parse_panels(Table(two))] == ["panel", "panel/com2"]
