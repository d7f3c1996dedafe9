"""``[gateway]``, ``[outbox]`` and ``[state]``: who the gateway is and where it keeps its data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.config import Table
from edge.outbox import OutboxConfig
from edge.outbox.config import DEFAULT_MAX_AGE_S
from protocols.wire import Priority

__all__ = ["GatewaySection", "StateSection", "parse_gateway", "parse_outbox", "parse_state"]

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
ID_HINT = "1-64 chars of A-Z a-z 0-9 _ . -, starting with a letter or digit"
MIB = 1024 * 1024
DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class GatewaySection:
    id: str
    """The gateway id: its MQTT topic level and its identity in the cloud."""
    site: str | None
    """The building or site it serves; the collector groups risk colours by it."""
    data_dir: Path
    """Outbox, local state and lock files."""
    log_level: str


@dataclass(frozen=True, slots=True)
class StateSection:
    keep_events: int
    flush_interval_s: float
    snapshot_interval_s: float


def parse_gateway(t: Table) -> GatewaySection:
    gid = t.text("id", pattern=ID_PATTERN, hint=ID_HINT)
    site = t.opt_text("site", pattern=ID_PATTERN, hint=ID_HINT)
    data_dir = t.path_value("data_dir", "/var/lib/firegate")
    assert data_dir is not None
    level = t.one_of("log_level", ["debug", "info", "warning", "error"], "info")
    t.finish()
    return GatewaySection(gid, site, data_dir, level)


def parse_outbox(t: Table | None, data_dir: Path) -> OutboxConfig:
    """``[outbox]``: size cap, age limits per class and the disk reserve (docs/outbox.md)."""
    if t is None:
        return OutboxConfig(data_dir / "outbox.db")
    max_mb = t.number("max_mb", 256.0, min=1.0, max=1_000_000.0)
    max_file_mb = t.opt_number("max_file_mb", min=2.0)
    reserve_mb = t.number("reserve_mb", 8.0, min=0.0, max=10_000.0)
    ages = dict(DEFAULT_MAX_AGE_S)
    for prio, key in ((Priority.MEASUREMENT, "measurement_max_age_days"),
                      (Priority.EVENT, "event_max_age_days"),
                      (Priority.ALARM, "alarm_max_age_days"),
                      (Priority.FIRE, "fire_max_age_days")):
        days = t.opt_number(key, above=0.0)
        if days is not None:
            ages[prio] = days * DAY_S
    if max_file_mb is not None and max_file_mb < max_mb:
        t.fail("max_file_mb", f"must be at least max_mb ({max_mb:g}), got {max_file_mb:g}")
    t.finish()
    return OutboxConfig(
        data_dir / "outbox.db",
        max_bytes=int(max_mb * MIB),
        max_file_bytes=None if max_file_mb is None else int(max_file_mb * MIB),
        reserve_bytes=int(reserve_mb * MIB),
        max_age_s=ages,
    )


def parse_state(t: Table | None) -> StateSection:
    """``[state]``: the technician's local view (``firegate status/events/sensors``)."""
    if t is None:
        return StateSection(20_000, 1.0, 5.0)
    keep = t.integer("keep_events", 20_000, min=100, max=10_000_000)
    flush = t.number("flush_interval_s", 1.0, min=0.05, max=60.0)
    snap = t.number("snapshot_interval_s", 5.0, min=0.2, max=600.0)
    t.finish()
    return StateSection(keep, flush, snap)
