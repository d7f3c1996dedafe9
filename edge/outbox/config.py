"""Outbox settings: declared, defaulted and validated in one place, before anything opens.

Validation happens in ``__post_init__`` (Telegraf's ``Init()`` rule): a bad setting fails
when the configuration is loaded, naming the key, not later inside the committer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from protocols.wire import Priority

__all__ = ["DEFAULT_MAX_AGE_S", "OutboxConfig"]

DAY_S = 86_400.0
DEFAULT_MAX_AGE_S: Mapping[Priority, float | None] = MappingProxyType(
    {
        Priority.FIRE: None,
        Priority.ALARM: None,
        Priority.EVENT: None,
        # A week of readings is ample history for trend graphs after an outage; older values
        # only crowd out the current ones when the link comes back.
        Priority.MEASUREMENT: 7 * DAY_S,
    }
)


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    """Where the outbox lives and how large, old and bursty it may get.

    A typical record stores ~140 bytes of payload (measurements ~125, panel events with
    Chinese descriptions ~170-250), so the default 256 MiB cap holds about 1.9 million
    records, days of a busy building's readings. The SQLite file is ~1.3x ``max_bytes``
    (index and page overhead, see docs/benchmarks.md); ``max_file_bytes`` is the hard
    ceiling for the file itself.
    """

    path: Path
    """The SQLite database file; ``-wal``, ``-shm``, ``.lock`` and ``.reserve`` sit next to it."""
    max_bytes: int = 256 * 1024 * 1024
    """Soft cap on stored payload bytes; past it, records are evicted by class (see docs)."""
    max_rows: int | None = None
    """Optional soft cap on the number of stored records."""
    max_age_s: Mapping[Priority, float | None] = field(default_factory=lambda: DEFAULT_MAX_AGE_S)
    """Per class: records older than this are dropped (counted). ``None`` never expires;
    alarms and fire alarms never expire by default."""
    max_file_bytes: int | None = None
    """Hard cap on the database file (SQLite ``max_page_count``). Reaching it is handled like
    a full disk: measurements are evicted, then :class:`OutboxFull` is raised."""
    reserve_bytes: int = 8 * 1024 * 1024
    """A file of this size is kept next to the database and deleted when the disk is full,
    so a checkpoint and an eviction can still run (see docs/outbox.md). 0 disables it."""
    commit_window_s: float = 0.002
    """How long an ``append`` (a caller waiting for durability, such as a panel frame to
    confirm) or an ack may wait for others to share its commit (fsync). Fire alarms never
    wait."""
    submit_window_s: float = 0.25
    """How long records given to ``submit`` (nobody waits for their fsync: Modbus polls, BLE
    advertisements) may wait for company when no ``append`` or ack is queued. At 1,000
    readings/s this turns ~100 fsyncs/s into ~4 (docs/outbox.md, "Commit windows"). An
    ``append`` arriving meanwhile shortens the wait to ``commit_window_s``."""
    max_group_records: int = 500
    """Records per transaction at most; bounds how long a fire alarm can queue behind a
    measurement flood's commit."""
    max_queued_records: int = 20_000
    """Records ``submit`` may queue ahead of the committer before it makes callers wait
    (the memory bound of a flood). ``append`` and fire alarms are never held by it."""
    maintenance_interval_s: float = 30.0
    """How often age expiry runs and a missing reserve file is re-created."""
    wal_autocheckpoint_pages: int = 1000
    """SQLite's default; the WAL stays near 4 MiB and is reused, not regrown."""
    busy_timeout_ms: int = 5_000

    def __post_init__(self) -> None:
        if not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        _positive("max_bytes", self.max_bytes)
        if self.max_rows is not None:
            _positive("max_rows", self.max_rows)
        if self.max_file_bytes is not None and self.max_file_bytes < 64 * 1024:
            raise ValueError(f"max_file_bytes: at least 65536, got {self.max_file_bytes}")
        if self.reserve_bytes < 0:
            raise ValueError(f"reserve_bytes: >= 0, got {self.reserve_bytes}")
        if not 0.0 <= self.commit_window_s <= 1.0:
            raise ValueError(f"commit_window_s: 0..1 s, got {self.commit_window_s}")
        if not 0.0 <= self.submit_window_s <= 5.0:
            raise ValueError(f"submit_window_s: 0..5 s, got {self.submit_window_s}")
        _positive("max_group_records", self.max_group_records)
        _positive("max_queued_records", self.max_queued_records)
        if self.maintenance_interval_s <= 0:
            raise ValueError(f"maintenance_interval_s: > 0, got {self.maintenance_interval_s}")
        _positive("wal_autocheckpoint_pages", self.wal_autocheckpoint_pages)
        ages: dict[Priority, float | None] = dict(DEFAULT_MAX_AGE_S)
        for key, age in self.max_age_s.items():
            if not isinstance(key, Priority):
                raise ValueError(f"max_age_s: keys are Priority members, got {key!r}")
            if age is not None and not age > 0:
                raise ValueError(f"max_age_s[{key.label}]: > 0 or None, got {age}")
            ages[key] = age
        object.__setattr__(self, "max_age_s", MappingProxyType(ages))


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: a positive integer, got {value!r}")
