"""The ``[uitd_fleet]`` table of a scenario file: how many UITDs, where the centre is, what
happens to them. Validated through :class:`common.config.Table`: every error is a
:class:`~common.config.ConfigError` naming the key (``uitd_fleet.bursts[1].fraction``) and what
is allowed; :func:`load_spec` adds the file's name. Nothing is opened while validating.

Addresses derive from an index: UITD ``i`` (0-based) has the 6-byte source address
``first_address + i`` (its integer view under its profile's byte order, the number a
collector's ``[[gb26875.uitd]]`` ``address`` takes), so a centre's list can be printed from
the same settings (:func:`uitd_entries`) and a run is the same fleet every time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import ConfigError, Table, read_toml
from protocols.gb26875 import PROFILES, Profile, get_profile
from simulators.panel import FaultSettings

__all__ = ["SECTION", "Burst", "Drop", "FleetSpec", "UitdIdentity", "identities", "load_spec",
           "parse_spec", "uitd_entries"]

SECTION = "uitd_fleet"
MAX_ADDRESS = (1 << 48) - 1
MAX_UITDS = 100_000
NEVER = math.inf
_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}"
_ID_HINT = "1-41 chars of A-Z a-z 0-9 _ . -, starting with a letter or digit"


@dataclass(frozen=True, slots=True)
class Burst:
    """``[[uitd_fleet.bursts]]``: at ``at`` s, a ``fraction`` of the fleet raises ``alarms``
    fire alarms each (distinct detectors), spread over ``spread`` s; each panel is reset
    ``reset_after`` s after its own last alarm (type 4 + type 1), so a later burst can alarm
    again."""

    at: float
    fraction: float = 1.0
    alarms: int = 1
    spread: float = 1.0
    reset_after: float = 30.0  # NEVER: the alarms stay latched


@dataclass(frozen=True, slots=True)
class Drop:
    """``[[uitd_fleet.drops]]``: at ``at`` s a ``fraction`` of the fleet loses its TCP link
    abruptly (no FIN handshake waited for) and dials again after ``duration`` s plus the
    reconnect jitter."""

    at: float
    fraction: float
    duration: float = 5.0


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """Everything a UITD fleet needs; :func:`load_spec` builds it from TOML."""

    centre: str = "127.0.0.1:9000"
    uitds: int = 10
    first_address: int = 0x0000_0100_0000  # UITD i: first_address + i
    centre_address: int = 0
    profiles: tuple[str, ...] = ("standard",)  # round-robin over the fleet by index
    site_prefix: str = "uitd-site"
    uitds_per_site: int = 1
    detectors: int = 8  # smoke detectors per UITD (component type 42), addresses 1..n
    state_interval: float = 60.0  # type 21 + type 1 every N s per UITD (staggered); 0 = off
    announce: bool = True  # type 21 + type 1 at once on every connection (identifies the UITD)
    rate: float = 0.0  # extra analog uploads (type 3) per second over the whole fleet
    confirm_timeout: float = 10.0  # §6.5.4
    retries: int = 3  # §6.5.5
    check_post_answer: float = 10.0  # s until the "operator" answers a check-post; NEVER
    connect_rate: float = 1000.0  # new connections per second while the fleet comes up
    reconnect_min: float = 1.0
    reconnect_max: float = 30.0
    slow_fraction: float = 0.0  # UITDs on a slow line (writes paced at slow_baud)
    slow_baud: int = 1200
    seed: int = 0
    bursts: tuple[Burst, ...] = ()
    drops: tuple[Drop, ...] = ()
    faults: FaultSettings = field(default_factory=FaultSettings)  # the panel simulator's rates

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.centre.rpartition(":")
        return host.strip("[]"), int(port)

    def validate(self) -> FleetSpec:
        """Re-check a spec built in code (the CLI's flags); returns it."""
        return parse_spec(to_data(self))


@dataclass(frozen=True, slots=True)
class UitdIdentity:
    """Who UITD ``index`` is: its address, dialect, and the ids a centre keeps it under."""

    index: int
    address: int
    profile: Profile
    site: str

    @property
    def gateway(self) -> str:
        """The gateway id (the collector's id for an unlisted UITD, ``uitd-<12 hex>``)."""
        return f"uitd-{self.address:012x}"

    @property
    def address_text(self) -> str:
        return f"0x{self.address:012x}"


def identities(spec: FleetSpec) -> list[UitdIdentity]:
    """Every UITD of the fleet, by index."""
    return [UitdIdentity(i, spec.first_address + i, get_profile(spec.profiles[i % len(
        spec.profiles)]), f"{spec.site_prefix}-{i // spec.uitds_per_site + 1:05d}")
        for i in range(spec.uitds)]


def uitd_entries(spec: FleetSpec) -> list[dict[str, str]]:
    """The collector's ``[[gb26875.uitd]]`` tables for this fleet (address, gateway, site,
    profile), in index order."""
    return [{"address": u.address_text, "gateway": u.gateway, "site": u.site,
             "profile": u.profile.name} for u in identities(spec)]


# -- reading ----------------------------------------------------------------------------------

def load_spec(path: str | Path) -> FleetSpec:
    """The ``[uitd_fleet]`` table of a TOML file (absent: the defaults)."""
    data = read_toml(Path(path))
    try:
        t = Table(data).table(SECTION) or Table({}, SECTION)
        return _parse(t)
    except ConfigError as exc:
        raise exc.within(path) from None


def parse_spec(table: Mapping[str, Any]) -> FleetSpec:
    """Validate the contents of a ``[uitd_fleet]`` table."""
    t = Table({SECTION: table}).table(SECTION, required=True)
    assert t is not None
    return _parse(t)


def _seconds_or_never(t: Table, key: str, default: float) -> float:
    value = t.raw(key, "never" if default == NEVER else default)
    if value == "never":
        return NEVER
    if isinstance(value, str):
        t.fail(key, f'must be seconds or "never", got {value!r}')
    return t.number(key, default, min=0)


def _parse(t: Table) -> FleetSpec:
    d = FleetSpec()
    centre = t.text("centre", d.centre)
    host, sep, port = centre.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65_535:
        t.fail("centre", f"must be HOST:PORT (port 1-65535), got {centre!r}")
    uitds = t.integer("uitds", d.uitds, min=1, max=MAX_UITDS)
    first = t.integer("first_address", d.first_address, min=0, max=MAX_ADDRESS)
    if first + uitds - 1 > MAX_ADDRESS:
        t.fail("first_address", f"0x{first:012x} + {uitds} UITDs runs past the 6-byte "
                                f"address range (0x{MAX_ADDRESS:012x})")
    profiles = tuple(t.texts("profiles", list(d.profiles)))
    if not profiles:
        t.fail("profiles", "must name at least one profile")
    for i, name in enumerate(profiles):
        if name not in PROFILES:
            t.fail(f"profiles[{i}]", f"must be one of {', '.join(map(repr, sorted(PROFILES)))}"
                                     f", got {name!r}")
    detectors = t.integer("detectors", d.detectors, min=1, max=1000)
    spec = FleetSpec(
        centre=centre, uitds=uitds, first_address=first,
        centre_address=t.integer("centre_address", d.centre_address, min=0, max=MAX_ADDRESS),
        profiles=profiles,
        site_prefix=t.text("site_prefix", d.site_prefix, pattern=_ID_PATTERN, hint=_ID_HINT),
        uitds_per_site=t.integer("uitds_per_site", d.uitds_per_site, min=1, max=MAX_UITDS),
        detectors=detectors,
        state_interval=t.number("state_interval", d.state_interval, min=0, max=86_400),
        announce=t.flag("announce", d.announce),
        rate=t.number("rate", d.rate, min=0, max=1_000_000),
        confirm_timeout=t.number("confirm_timeout", d.confirm_timeout, above=0, max=10),
        retries=t.integer("retries", d.retries, min=0, max=100),
        check_post_answer=_seconds_or_never(t, "check_post_answer", d.check_post_answer),
        connect_rate=t.number("connect_rate", d.connect_rate, above=0, max=1_000_000),
        reconnect_min=t.number("reconnect_min", d.reconnect_min, above=0, max=3600),
        reconnect_max=t.number("reconnect_max", d.reconnect_max, above=0, max=3600),
        slow_fraction=t.number("slow_fraction", d.slow_fraction, min=0, max=1),
        slow_baud=t.integer("slow_baud", d.slow_baud, min=50, max=4_000_000),
        seed=t.integer("seed", d.seed, min=0, max=2**63),
        bursts=tuple(_burst(b, detectors) for b in t.tables("bursts")),
        drops=tuple(_drop(x) for x in t.tables("drops")),
        faults=_faults(t.table("faults")),
    )
    if spec.reconnect_max < spec.reconnect_min:
        t.fail("reconnect_max", f"must be at least reconnect_min ({spec.reconnect_min:g}), "
                                f"got {spec.reconnect_max:g}")
    t.finish()
    return spec


def _burst(t: Table, detectors: int) -> Burst:
    burst = Burst(
        at=t.number("at", min=0),
        fraction=t.number("fraction", 1.0, above=0, max=1),
        alarms=t.integer("alarms", 1, min=1, max=1000),
        spread=t.number("spread", 1.0, min=0, max=86_400),
        reset_after=_seconds_or_never(t, "reset_after", 30.0),
    )
    if burst.alarms > detectors:
        t.fail("alarms", f"must be at most detectors ({detectors}): each alarm is on its "
                         f"own detector, got {burst.alarms}")
    t.finish()
    return burst


_RATES = ("garbage", "split", "bad_checksum", "duplicate_frame", "withhold_confirm",
          "duplicate_confirm")


def _faults(t: Table | None) -> FaultSettings:
    """``[uitd_fleet.faults]``: the panel simulator's per-frame fault rates (docs/simulators.md
    "Fault injection"), for every UITD of the fleet."""
    if t is None:
        return FaultSettings()
    rates = {name: rate for name in _RATES
             if (rate := t.opt_number(name, min=0, max=1)) is not None}
    settings = FaultSettings(
        **rates,
        garbage_bytes=t.integer("garbage_bytes", 16, min=1, max=4096),
        split_parts=t.integer("split_parts", 3, min=2, max=1054),
        split_gap=t.number("split_gap", 0.02, min=0, max=10),
        seed=None)  # each UITD's own, from the fleet's seed (runner)
    t.finish()
    return settings


def _drop(t: Table) -> Drop:
    drop = Drop(at=t.number("at", min=0), fraction=t.number("fraction", above=0, max=1),
                duration=t.number("duration", 5.0, min=0, max=86_400))
    t.finish()
    return drop


def to_data(spec: FleetSpec) -> dict[str, Any]:
    """``spec`` as a ``[uitd_fleet]`` table (round-trips through :func:`parse_spec`)."""
    def seconds(v: float) -> float | str:
        return "never" if v == NEVER else v

    return {
        "centre": spec.centre, "uitds": spec.uitds, "first_address": spec.first_address,
        "centre_address": spec.centre_address, "profiles": list(spec.profiles),
        "site_prefix": spec.site_prefix, "uitds_per_site": spec.uitds_per_site,
        "detectors": spec.detectors, "state_interval": spec.state_interval,
        "announce": spec.announce,
        "rate": spec.rate, "confirm_timeout": spec.confirm_timeout, "retries": spec.retries,
        "check_post_answer": seconds(spec.check_post_answer),
        "connect_rate": spec.connect_rate, "reconnect_min": spec.reconnect_min,
        "reconnect_max": spec.reconnect_max, "slow_fraction": spec.slow_fraction,
        "slow_baud": spec.slow_baud, "seed": spec.seed,
        "bursts": [{"at": b.at, "fraction": b.fraction, "alarms": b.alarms, "spread": b.spread,
                    "reset_after": seconds(b.reset_after)} for b in spec.bursts],
        "drops": [{"at": x.at, "fraction": x.fraction, "duration": x.duration}
                  for x in spec.drops],
        "faults": {**{name: spec.faults.rate(name) for name in _RATES},
                   "garbage_bytes": spec.faults.garbage_bytes,
                   "split_parts": spec.faults.split_parts, "split_gap": spec.faults.split_gap},
    }
