"""The gateway's health report: uptime, outbox, drops, per-driver counters, links, CPU, RAM, disk.

Published by the uplink every ``health_interval_s`` and on ``report_health``, written to the
local state for ``firegate status``. Counters are cumulative since the agent started (the
outbox's eviction counters since the database was created: they are persisted).
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from edge import __version__
from edge.drivers.base import Counters, LinkBoard, wall_ms
from edge.outbox import Outbox
from protocols.wire import Health, Priority

__all__ = ["HealthProbe", "rss_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """Resident set size now (Linux ``/proc``), else the peak from ``getrusage``."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak * 1024 if peak else None


class HealthProbe:
    """Builds :class:`Health` from the parts' own counters; CPU is measured between calls."""

    def __init__(self, gateway_id: str, outbox: Outbox, data_dir: Path, *,
                 counters: Callable[[], Mapping[str, Counters]], links: LinkBoard,
                 started_monotonic: float | None = None) -> None:
        self.gateway_id = gateway_id
        self.outbox = outbox
        self.data_dir = data_dir
        self._counters = counters
        self.links = links
        self._started = time.monotonic() if started_monotonic is None else started_monotonic
        self._cpu_mark = (time.monotonic(), time.process_time())

    def cpu_percent(self) -> float:
        """Process CPU use since the previous call, in % of one core."""
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then = self._cpu_mark
        self._cpu_mark = (now, cpu)
        elapsed = now - then
        return 0.0 if elapsed <= 0 else round(max(0.0, cpu - cpu_then) / elapsed * 100.0, 2)

    async def health(self) -> Health:
        stats = await self.outbox.stats()
        try:
            disk_free: int | None = shutil.disk_usage(self.data_dir).free
        except OSError:
            disk_free = None
        counters = {name: c.snapshot() for name, c in self._counters().items()}
        # The wire's Health has no field for records awaiting the collector's confirmation
        # yet: they go with the outbox's counters, as gauges (docs/outbox.md, "Health").
        outbox = {**stats.errors, "sent_unconfirmed": stats.sent_unconfirmed,
                  "unconfirmed_oldest_s": int(stats.oldest_unconfirmed_s or 0),
                  "foreign_confirms": stats.foreign_confirms}
        counters["outbox"] = {k: n for k, n in outbox.items() if n}
        return Health(
            gateway_id=self.gateway_id,
            ts_ms=wall_ms(),
            uptime_s=round(time.monotonic() - self._started, 3),
            version=__version__,
            outbox_depth=stats.total_depth,
            outbox_oldest_s=stats.oldest_age_s,
            evicted={p.label: n for p, n in stats.evicted.items() if n} if stats.evicted else {},
            counters={k: v for k, v in counters.items() if v},
            links={name: info.state for name, info in self.links.snapshot().items()},
            cpu_percent=self.cpu_percent(),
            mem_rss_bytes=rss_bytes(),
            disk_free_bytes=disk_free,
            last_seq=stats.last_seq,
            epoch=stats.epoch,
        )


def priority_labels() -> dict[int, str]:
    return {int(p): p.label for p in Priority}
