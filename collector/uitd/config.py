"""``[gb26875]``, ``[[gb26875.uitd]]`` and ``[[gb26875.upstream]]``: the collector as a
GB/T 26875.3 monitoring centre that UITDs dial into, and as a UITD forwarding to higher centres.

Validated here and nowhere else (docs/gb26875-centre.md lists every key with its default; the
commented sample is ``collector/collector.example.toml``). Nothing here opens a socket.

A UITD's ``address`` is the integer view of the 6-byte source address of its frames under its
profile's byte order (docs/gb26875.md "Frames": little-endian per 表1, big-endian for the
``hikvision`` profile), written ``"0x"`` + 12 hex digits or as a plain integer. So the address a
UITD's label shows, ``0x000000000379``, is the one to write, whatever its dialect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.config import ConfigError, Table
from protocols.gb26875 import PROFILES, Profile, address_from_int, get_profile
from protocols.wire import EventType

__all__ = [
    "DEFAULT_FORWARD_EVENTS",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_OPERATOR",
    "MAX_SILENCE_S",
    "CentreConfig",
    "UitdEntry",
    "UpstreamConfig",
    "parse_address",
    "parse_gb26875",
    "unknown_gateway_id",
]

DEFAULT_MAX_CONNECTIONS = 20_000
"""Twice the 10,000 concurrent UITDs the benchmark aims at (bench/bench_uitd_centre.py)."""
MAX_SILENCE_S = 7200.0
"""GB 50440 asks the centre to patrol every UITD at least every 2 h; a link silent longer is
dead by any reading."""
DEFAULT_FORWARD_EVENTS: tuple[str, ...] = (
    "fire_alarm", "fault", "supervisory", "power_fault", "mains_power_fault",
    "backup_power_fault", "bus_fault", "started", "feedback", "disabled", "reset",
)
"""What an upstream receives unless its ``events`` says otherwise: the states a GB/T 26875.3
centre expects from a UITD (图7 component states, 图6 system states)."""
DEFAULT_OPERATOR = 1
"""The operator number of a check-post answer by a user ``operators`` does not list."""
_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_ID_HINT = "1-64 chars of A-Z a-z 0-9 _ . -, starting with a letter or digit"
_ADDRESS_HINT = '"0x" and 12 hex digits (e.g. "0x000000000379") or an integer below 2**48'


def unknown_gateway_id(address: int) -> str:
    """The gateway id an unlisted UITD is stored under with ``accept_unknown = true``."""
    return f"uitd-{address:012x}"


@dataclass(frozen=True, slots=True)
class UitdEntry:
    """One ``[[gb26875.uitd]]``: a UITD the centre takes."""

    address: int
    """Integer view of its 6-byte source address under ``profile``'s byte order."""
    gateway: str
    """The gateway id its records, registry entry and ledger are kept under."""
    site: str
    profile: Profile = field(default_factory=lambda: get_profile("standard"))
    timezone: str | None = None
    """IANA zone of its time labels (the standard defines none); None: the collector's."""

    @property
    def raw_address(self) -> bytes:
        """The six bytes as they appear in its frames."""
        return address_from_int(self.address, self.profile.address_byte_order)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One ``[[gb26875.upstream]]``: a higher monitoring centre this collector reports to as a
    UITD (collector/uitd/upstream*.py)."""

    name: str
    host: str
    port: int
    uitd_address: int
    """The address this collector uses as the UITD toward that centre (little-endian view
    under ``profile``)."""
    centre_address: int = 0
    profile: Profile = field(default_factory=lambda: get_profile("standard"))
    events: frozenset[str] = frozenset(DEFAULT_FORWARD_EVENTS)
    """Event types forwarded; ``["*"]`` in the file means every one."""
    restores: bool = True
    """Also forward the clearing of a forwarded condition."""
    sites: tuple[str, ...] = ("*",)
    """fnmatch globs of the sites whose records go to this centre."""
    queue_max: int = 10_000
    """Records waiting for this centre's confirm (kept in the state directory); past it the
    oldest non-fire record is dropped and counted (fire alarms are never dropped for others)."""
    queue_max_age_s: float = 86_400.0
    """A record older than this is dropped (counted) rather than sent late."""
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    """Back-off between connection attempts, doubling with jitter (one back-off for all)."""
    timeout_s: float = 10.0
    """Waiting for a confirm (§6.5.4: "不宜大于10 s")."""
    retries: int = 3
    """Resends of one packet before the link is taken as broken (§6.5.5: "宜为3次")."""
    keepalive_s: float = 60.0
    """Idle this long, the link is patrolled with a UITD status upload (type 21)."""
    site: str | None = None
    """The site of the alarm a check-post (查岗, type 91) from this centre opens; None: the
    alarm's gateway id ``upstream:<name>`` is its own site (docs/gb26875-upstream.md)."""
    operators: tuple[tuple[str, int], ...] = ()
    """Operator numbers (操作员编号, 1 byte) of the users who answer check-posts, by user
    name; a user not listed answers as :data:`DEFAULT_OPERATOR`."""

    @property
    def check_post_site(self) -> str:
        """The site of this centre's check-post alarms."""
        return self.site if self.site is not None else f"upstream:{self.name}"

    def operator_of(self, user: str | None) -> int:
        """The operator number a check-post answered by ``user`` carries."""
        return dict(self.operators).get(user or "", DEFAULT_OPERATOR)


@dataclass(frozen=True, slots=True)
class CentreConfig:
    """``[gb26875]``; None in CollectorConfig when there is no ``[gb26875]``."""

    listen: str | None = "0.0.0.0:9000"
    """TCP HOST:PORT UITDs dial into; None (``listen = ""``): no centre, upstreams only."""
    accept_unknown: bool = False
    unknown_profile: Profile = field(default_factory=lambda: get_profile("standard"))
    """Dialect assumed for UITDs not listed (``profile`` in ``[gb26875]``)."""
    unknown_site: str | None = None
    """Site of UITDs not listed; None: the gateway id is its own site."""
    silence_timeout_s: float = 90.0
    """No valid frame this long: ``link_fault``, gateway offline, connection closed. GB 26875.1
    asks a UITD to signal a broken link within 100 s, so the centre should not be slower."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_unidentified_per_ip: int = 1024
    """Links at once from one peer IP address that have not yet sent a valid frame: one host
    (a slowloris script, a port scanner) must not take every slot of ``max_connections``.
    Identified links need no such cap: each holds a configured address, one link per
    address. Behind a TCP load balancer every UITD has the balancer's address: raise it."""
    max_connections_per_ip: int = 0
    """Links at once from one peer IP address, identified or not; 0: no such cap (a balancer
    or a NAT puts many UITDs behind one address)."""
    identify_timeout_s: float = 90.0
    """A link that has not sent one valid frame this long is closed (``unidentified``). The
    default is the silence timeout's; lower it when the UITDs speak first on connecting."""
    max_replacements: int = 5
    replace_window_s: float = 600.0
    """GB/T 26875.3 has no authentication: a peer that claims a connected UITD's address
    replaces its link. Past ``max_replacements`` replacements of one UITD within
    ``replace_window_s`` that UITD's held link is no longer replaced (newcomers are refused,
    ``refused_replace_storm``) and an ``address_conflict`` link fault is raised for it."""
    max_frames_per_s: float = 50.0
    """Per connection; a UITD past it (averaged over ``flood_burst`` frames) is a flood: the
    connection is closed and counted."""
    flood_burst: int = 200
    max_pending_uploads: int = 16
    """Uploads of one connection stored-but-unconfirmed at once; past it reading pauses
    (TCP back-pressure) instead of buffering."""
    command_timeout_s: float = 10.0
    """A downstream command (clock sync, check-post, read) unanswered this long is resent;
    §6.5.4: at most 10 s."""
    command_retries: int = 3
    """Resends of a downstream command before it fails (§6.5.5)."""
    centre_address: int = 0
    """Our own 6-byte address in commands we start; 0: the address each UITD sends its frames
    to (answers always echo the UITD's addressing)."""
    uitds: tuple[UitdEntry, ...] = ()
    upstreams: tuple[UpstreamConfig, ...] = ()
    _by_raw: dict[bytes, UitdEntry] = field(init=False, repr=False, compare=False)

    @property
    def listen_address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def lookup(self, raw_address: bytes) -> UitdEntry | None:
        """The listed UITD whose frames carry ``raw_address`` as their source, if any."""
        return self._by_raw.get(raw_address)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_raw", {u.raw_address: u for u in self.uitds})


def parse_address(t: Table, key: str) -> int:
    """A 6-byte address: ``"0x"`` + 12 hex digits, or an integer below 2**48."""
    value = t.raw(key)
    if isinstance(value, bool):
        t.fail(key, f"must be {_ADDRESS_HINT}, got a boolean")
    if isinstance(value, int):
        if not 0 <= value < 1 << 48:
            t.fail(key, f"must be {_ADDRESS_HINT}, got {value}")
        return value
    if isinstance(value, str) and re.fullmatch(r"0[xX][0-9A-Fa-f]{12}", value):
        return int(value, 16)
    t.fail(key, f"must be {_ADDRESS_HINT}, got {value!r}")


def _listen(t: Table, key: str, default: str) -> str | None:
    listen = t.text(key, default, min_len=0)
    if not listen:
        return None
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65_535:
        t.fail(key, f'must be HOST:PORT (or "" for off), got {listen!r}')
    return listen


def _profile(t: Table, key: str = "profile") -> Profile:
    name = t.one_of(key, sorted(PROFILES), "standard")
    return get_profile(name)


def _uitd(t: Table) -> UitdEntry:
    profile = _profile(t)
    entry = UitdEntry(
        address=parse_address(t, "address"),
        gateway=t.text("gateway", pattern=_ID_PATTERN, hint=_ID_HINT),
        site=t.text("site", pattern=_ID_PATTERN, hint=_ID_HINT),
        profile=profile,
        timezone=t.opt_text("timezone", pattern=r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+){0,2}",
                            hint="an IANA zone like Asia/Shanghai", max_len=64),
    )
    if entry.timezone is not None:
        try:
            ZoneInfo(entry.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            t.fail("timezone", f"unknown IANA zone {entry.timezone!r}")
    t.finish()
    return entry


def _operators(t: Table) -> tuple[tuple[str, int], ...]:
    """``operators = { alice = 2, bob = 3 }``: user name -> operator number (0-255)."""
    sub = t.table("operators")
    if sub is None:
        return ()
    out = tuple((str(user), sub.integer(str(user), min=0, max=255)) for user in sub.data)
    sub.finish()
    return out


def _upstream(t: Table, index: int) -> UpstreamConfig:
    connect = t.text("connect")
    host, sep, port = connect.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65_535:
        t.fail("connect", f"must be HOST:PORT, got {connect!r}")
    events = t.texts("events", list(DEFAULT_FORWARD_EVENTS))
    kinds = [e.value for e in EventType]
    if events == ["*"]:
        events = kinds
    for e in events:
        if e not in kinds:
            t.fail("events", f"{e!r} is not an event type ({', '.join(kinds)}) (or [\"*\"])")
    sites = t.texts("sites", ["*"])
    if not sites:
        t.fail("sites", 'must name at least one site glob (["*"] for every site)')
    upstream = UpstreamConfig(
        name=t.text("name", f"upstream-{index + 1}", pattern=_ID_PATTERN, hint=_ID_HINT),
        host=host.strip("[]"), port=int(port),
        uitd_address=parse_address(t, "uitd_address"),
        centre_address=parse_address(t, "centre_address") if t.has("centre_address") else 0,
        profile=_profile(t),
        events=frozenset(events),
        restores=t.flag("restores", True),
        sites=tuple(sites),
        queue_max=t.integer("queue_max", 10_000, min=1, max=10_000_000),
        queue_max_age_s=t.number("queue_max_age_s", 86_400.0, above=0.0),
        reconnect_min_s=t.number("reconnect_min_s", 1.0, above=0.0, max=3600.0),
        reconnect_max_s=t.number("reconnect_max_s", 60.0, above=0.0, max=86_400.0),
        timeout_s=t.number("timeout_s", 10.0, above=0.0, max=10.0),
        retries=t.integer("retries", 3, min=0, max=10),
        keepalive_s=t.number("keepalive_s", 60.0, min=1.0, max=MAX_SILENCE_S),
        site=t.opt_text("site", pattern=_ID_PATTERN, hint=_ID_HINT),
        operators=_operators(t),
    )
    if upstream.reconnect_max_s < upstream.reconnect_min_s:
        t.fail("reconnect_max_s", f"must be at least reconnect_min_s "
                                  f"({upstream.reconnect_min_s:g})")
    t.finish()
    return upstream


def parse_gb26875(t: Table | None) -> CentreConfig | None:
    """Validate ``[gb26875]`` with its UITDs and upstreams; None when the section is absent."""
    if t is None:
        return None
    listen = _listen(t, "listen", "0.0.0.0:9000")
    uitds = tuple(_uitd(u) for u in t.tables("uitd"))
    seen_raw: dict[bytes, int] = {}
    seen_gw: dict[str, int] = {}
    for i, u in enumerate(uitds):
        if u.raw_address in seen_raw:
            raise ConfigError(f"{t.key('uitd')}[{i}].address",
                              f"0x{u.address:012x} is already uitd[{seen_raw[u.raw_address]}]")
        if u.gateway in seen_gw:
            raise ConfigError(f"{t.key('uitd')}[{i}].gateway",
                              f"{u.gateway!r} is already uitd[{seen_gw[u.gateway]}]")
        seen_raw[u.raw_address] = i
        seen_gw[u.gateway] = i
    upstreams = tuple(_upstream(u, i) for i, u in enumerate(t.tables("upstream")))
    names = [u.name for u in upstreams]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{t.key('upstream')}[{i}].name", f"{name!r} is used twice")
    config = CentreConfig(
        listen=listen,
        accept_unknown=t.flag("accept_unknown", False),
        unknown_profile=_profile(t),
        unknown_site=t.opt_text("unknown_site", pattern=_ID_PATTERN, hint=_ID_HINT),
        silence_timeout_s=t.number("silence_timeout_s", 90.0, min=1.0, max=MAX_SILENCE_S),
        max_connections=t.integer("max_connections", DEFAULT_MAX_CONNECTIONS, min=1,
                                  max=1_000_000),
        max_unidentified_per_ip=t.integer("max_unidentified_per_ip", 1024, min=1,
                                          max=1_000_000),
        max_connections_per_ip=t.integer("max_connections_per_ip", 0, min=0, max=1_000_000),
        identify_timeout_s=t.number("identify_timeout_s", 90.0, min=1.0, max=MAX_SILENCE_S),
        max_replacements=t.integer("max_replacements", 5, min=1, max=10_000),
        replace_window_s=t.number("replace_window_s", 600.0, min=1.0, max=86_400.0),
        max_frames_per_s=t.number("max_frames_per_s", 50.0, above=0.0, max=100_000.0),
        flood_burst=t.integer("flood_burst", 200, min=1, max=1_000_000),
        max_pending_uploads=t.integer("max_pending_uploads", 16, min=1, max=1024),
        command_timeout_s=t.number("command_timeout_s", 10.0, above=0.0, max=10.0),
        command_retries=t.integer("command_retries", 3, min=0, max=10),
        centre_address=(parse_address(t, "centre_address") if t.has("centre_address")
                        else 0),
        uitds=uitds, upstreams=upstreams,
    )
    t.raw("centre_address", None)
    t.finish()
    return config

