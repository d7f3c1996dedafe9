"""``[[panel]]``: one GB/T 26875.3 link to a fire panel's user information transmission device.

The gateway is the *monitoring centre* end of the link (GB/T 26875.3 §5): the UITD uploads alarms
and states (command 2), the gateway confirms them once they are durable, reads state (61, 62, 81),
sets the clock (90) and sends check-posts (91). Each ``[[panel]]`` table names exactly one link:
a serial device (``port``), a UITD to dial (``connect``), or a socket the UITD dials (``listen``).

Nothing here opens a port: ``firegate check-config`` runs exactly this parser.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from enum import StrEnum

from common.config import Table
from protocols.gb26875 import PROFILES

__all__ = ["ComponentKey", "LinkKind", "PanelConfig", "parse_panel", "parse_panels"]

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_PREFIX = rf"{_SEGMENT}(/{_SEGMENT})*"
_SYSTEM = re.compile(r"(\d{1,3})-(\d{1,3})")
_COMPONENT = re.compile(r"(\d{1,3})-(\d{1,3})/(0[xX][0-9a-fA-F]{1,8}|\d{1,10})")
_PARITY = {"none": "N", "even": "E", "odd": "O", "mark": "M", "space": "S"}
MAX_ADDRESS = (1 << 48) - 1  # 6-byte source/destination address (表1)


class LinkKind(StrEnum):
    """How the gateway reaches the UITD."""

    SERIAL = "serial"
    TCP_CLIENT = "tcp_client"  # ``connect``: the UITD listens (a networked panel gateway)
    TCP_SERVER = "tcp_server"  # ``listen``: the UITD dials the centre, as in the field


@dataclass(frozen=True, slots=True)
class ComponentKey:
    """A component to read with type 62 (图32: system type, system address, 4-byte address)."""

    system_type: int
    system_address: int
    address: int  # uint32 little-endian view of the 4 address bytes


@dataclass(frozen=True, slots=True)
class PanelConfig:
    """One panel link. Defaults are what a site with one UITD on a serial line expects."""

    name: str
    """Link name; the driver is ``panel/<name>`` and so is its entry in the link states."""
    port: str | None = None
    """Serial device (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``)."""
    connect: tuple[str, int] | None = None
    """Dial a UITD that listens on HOST:PORT."""
    listen: tuple[str, int] | None = None
    """Listen on HOST:PORT for the UITD to dial in (port 0: any free port, for tests)."""
    baud: int = 9600
    bytesize: int = 8
    parity: str = "N"
    """pyserial letter: N, E, O, M, S (the TOML says none, even, odd, mark, space)."""
    stopbits: float = 1.0
    profile: str = "standard"
    """Dialect profile of the codec (``protocols.gb26875.PROFILES``)."""
    centre_address: int = 0
    """Our 6-byte address as an integer, in the profile's byte order."""
    uitd_address: int | None = None
    """The UITD's address; None: learnt from the first frame it sends (zero until then)."""
    systems: tuple[tuple[int, int], ...] = ((1, 1),)
    """Systems (type, address) read with 61 besides those seen; 1-1 is a fire alarm system."""
    components: tuple[ComponentKey, ...] = ()
    """Components read with 62 besides those seen with an active condition."""
    silence_timeout_s: float = 90.0
    """No valid frame for this long = monitoring-line fault (signalled within 100 s)."""
    probe_after_s: float = 30.0
    """When quiet this long, read the UITD state (81) so a live panel answers; 0 = never."""
    request_timeout_s: float = 10.0
    """Wait for an answer to a read or control before resending (§6.5.4: at most 10 s)."""
    retries: int = 3
    """Resends of an unanswered read or control (§6.5.5: 3)."""
    clock_sync_interval_s: float = 3600.0
    """Set the UITD clock (type 90) on connect and then this often; 0 = never."""
    read_state_on_connect: bool = True
    """Read 61, 62 and 81 at start and after every reconnect."""
    reopen_min_s: float = 1.0
    reopen_max_s: float = 60.0
    """Back-off between reopen attempts: doubles from min to max, with jitter."""
    source_prefix: str = "panel"
    """First segment(s) of every source id: ``<prefix>/<sys>-<addr>/<type>-0x<addr>``."""
    timezone: str | None = None
    """IANA zone of the panel's clock (time labels carry none); None = the gateway's zone."""
    report_test_mode: bool = False
    """Raise ``test_mode`` when state bit 0 is clear; many devices always send it clear."""

    @property
    def link_name(self) -> str:
        """``panel/<name>``: the driver's name and its link in the health report."""
        return f"panel/{self.name}"

    @property
    def kind(self) -> LinkKind:
        """Which of ``port``, ``connect`` and ``listen`` is set."""
        if self.port is not None:
            return LinkKind.SERIAL
        return LinkKind.TCP_CLIENT if self.connect is not None else LinkKind.TCP_SERVER


def _host_port(t: Table, key: str, *, any_port: bool) -> tuple[str, int] | None:
    if not t.has(key):
        t.opt_text(key)  # marks the key as known for the "allowed here" list
        return None
    text = t.text(key, max_len=300)
    host, sep, port = text.rpartition(":")
    low = 0 if any_port else 1
    if not sep or not host or not port.isdigit() or not low <= int(port) <= 65535:
        t.fail(key, f"must be HOST:PORT with a port {low}-65535, got {text!r}")
    return host.strip("[]"), int(port)


def _address(t: Table, key: str, default: int | None) -> int | None:
    if default is None and not t.has(key):
        return t.opt_integer(key)  # None; marks the key as known
    value = t.integer(key, 0 if default is None else default)
    if not 0 <= value <= MAX_ADDRESS:
        t.fail(key, f"must be a 6-byte address 0-{MAX_ADDRESS} (0x{MAX_ADDRESS:X}), got {value}")
    return value


def _byte(t: Table, key: str, text: str, value: str) -> int:
    number = int(value)
    if number > 255:
        t.fail(key, f"{text!r}: {number} does not fit one byte (0-255)")
    return number


def _systems(t: Table) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for i, text in enumerate(t.texts("systems", ["1-1"])):
        m = _SYSTEM.fullmatch(text)
        key = f"systems[{i}]"
        if m is None:
            t.fail(key, f"must be 'TYPE-ADDRESS' (system type and address, 0-255), got {text!r}")
        out.append((_byte(t, key, text, m[1]), _byte(t, key, text, m[2])))
    return tuple(dict.fromkeys(out))


def _components(t: Table) -> tuple[ComponentKey, ...]:
    out: list[ComponentKey] = []
    for i, text in enumerate(t.texts("components", [])):
        m = _COMPONENT.fullmatch(text)
        key = f"components[{i}]"
        if m is None:
            t.fail(key, "must be 'TYPE-ADDRESS/COMPONENT' (e.g. '1-1/3001' or "
                        f"'1-1/0x00000bb9'), got {text!r}")
        address = int(m[3], 0)
        if address > 0xFFFFFFFF:
            t.fail(key, f"{text!r}: component address {address} is not a uint32")
        out.append(ComponentKey(_byte(t, key, text, m[1]), _byte(t, key, text, m[2]), address))
    return tuple(dict.fromkeys(out))


def parse_panel(t: Table) -> PanelConfig:
    """Read one ``[[panel]]`` table; every error names its key."""
    name = t.text("name", pattern=_NAME, hint="1-32 characters of A-Z a-z 0-9 _ . -, "
                                             "starting with a letter or digit")
    given = [k for k in ("port", "connect", "listen") if t.has(k)]
    if len(given) != 1:
        t.fail(given[1] if given else "", "give exactly one of port (serial device), "
               "connect (HOST:PORT of a UITD) or listen (HOST:PORT for the UITD to dial)")
    port = t.opt_text("port", max_len=300)
    connect = _host_port(t, "connect", any_port=False)
    listen = _host_port(t, "listen", any_port=True)
    if port is None:
        for key in ("baud", "bytesize", "parity", "stopbits"):
            if t.has(key):
                t.fail(key, "only applies to a serial port (give port, not connect/listen)")
    baud = t.integer("baud", 9600, min=50, max=4_000_000)
    bytesize = t.integer("bytesize", 8, min=5, max=8)
    parity = _PARITY[t.one_of("parity", tuple(_PARITY), "none")]
    stopbits = t.number("stopbits", 1.0)
    if stopbits not in (1.0, 1.5, 2.0):
        t.fail("stopbits", f"must be 1, 1.5 or 2, got {stopbits:g}")
    profile = t.one_of("profile", tuple(PROFILES), "standard")
    centre = _address(t, "centre_address", 0) or 0
    uitd = _address(t, "uitd_address", None)
    silence = t.number("silence_timeout_s", 90.0, min=1)
    probe = t.number("probe_after_s", 30.0, min=0)
    if probe >= silence:
        t.fail("probe_after_s", f"must be less than silence_timeout_s ({silence:g}) so a "
                                f"quiet panel is asked before it counts as lost, got {probe:g}")
    request_timeout = t.number("request_timeout_s", 10.0, above=0, max=10)
    retries = t.integer("retries", 3, min=0, max=10)
    sync = t.number("clock_sync_interval_s", 3600.0, min=0)
    read_state = t.flag("read_state_on_connect", True)
    reopen_min = t.number("reopen_min_s", 1.0, above=0, max=3600)
    reopen_max = t.number("reopen_max_s", 60.0, above=0, max=86400)
    if reopen_max < reopen_min:
        t.fail("reopen_max_s", f"must be at least reopen_min_s ({reopen_min:g}), "
                               f"got {reopen_max:g}")
    prefix = t.text("source_prefix", "panel", pattern=_PREFIX, max_len=64,
                    hint="segments of A-Z a-z 0-9 _ . - separated by '/'")
    zone = t.opt_text("timezone", max_len=64)
    if zone is not None:
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            t.fail("timezone", f"unknown time zone {zone!r} (an IANA name such as "
                               "'Asia/Shanghai')")
    config = PanelConfig(
        name=name, port=port, connect=connect, listen=listen, baud=baud, bytesize=bytesize,
        parity=parity, stopbits=stopbits, profile=profile, centre_address=centre,
        uitd_address=uitd, systems=_systems(t), components=_components(t),
        silence_timeout_s=silence, probe_after_s=probe, request_timeout_s=request_timeout,
        retries=retries, clock_sync_interval_s=sync, read_state_on_connect=read_state,
        reopen_min_s=reopen_min, reopen_max_s=reopen_max, source_prefix=prefix,
        timezone=zone, report_test_mode=t.flag("report_test_mode", False))
    t.finish()
    return config


def parse_panels(root: Table) -> list[PanelConfig]:
    """Every ``[[panel]]`` of a config file: names and source prefixes must be unique, since
    link names and source ids are unique per gateway."""
    panels: list[PanelConfig] = []
    for table in root.tables("panel"):
        config = parse_panel(table)
        for j, other in enumerate(panels):
            if other.name == config.name:
                table.fail("name", f"{config.name!r} is already used by panel[{j}]")
            if other.source_prefix == config.source_prefix:
                table.fail("source_prefix", f"{config.source_prefix!r} is already used by "
                           f"panel[{j}] ({other.name}); give each panel its own, e.g. "
                           f"'panel/{config.name}'")
        panels.append(config)
    return panels
