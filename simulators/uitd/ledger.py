"""What the UITD fleet sent and what the centre confirmed: counters, confirm latency, and the
ground truth of every fire alarm.

A test holds the centre's store against :attr:`FleetLedger.alarms`: each :class:`FireAlarm` is
one fire alarm a UITD raised (its address, gateway id, detector, the time label it carries)
with every serial it went out under (serials restart with each connection, 表1, so one alarm
may have several) and how it ended. The counters and the latency sample are bounded; the
alarms list is as long as the run made alarms (one per burst hit, small).
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.panel import LedgerEntry, Status

from .config import UitdIdentity

__all__ = ["FireAlarm", "FleetLedger", "percentile"]

DETECTOR_TYPE = 42  # 表5: 点型光电感烟火灾探测器, the fleet's detectors
MAX_LATENCIES = 5_000_000  # samples kept (40 MB as doubles); past it they are counted only
MAX_ERRORS = 64  # distinct error texts kept


@dataclass(slots=True)
class FireAlarm:
    """One fire alarm a UITD raised: the ground truth for the centre's store."""

    uitd: UitdIdentity
    entry: LedgerEntry  # the engine's ledger entry: serials, attempts, status
    detector: int  # the detector's 4-byte component address as uint32 (1..detectors)
    time: str  # the object's time label (when the alarm occurred), ISO local time

    @property
    def confirmed(self) -> bool:
        return self.entry.status is Status.CONFIRMED

    def to_data(self) -> dict[str, Any]:
        return {"uitd": self.uitd.address_text, "gateway": self.uitd.gateway,
                "index": self.uitd.index, "detector": self.detector,
                "component_type": DETECTOR_TYPE,
                "time": self.time, "serials": list(self.entry.serials),
                "attempts": self.entry.attempts, "status": self.entry.status.value}


def percentile(sorted_values: Any, q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted values, nearest rank; None when empty."""
    n = len(sorted_values)
    if not n:
        return None
    rank = min(n - 1, max(0, int(q * n + 0.999999) - 1))
    return float(sorted_values[rank])


class FleetLedger:
    """Fleet-wide counters, confirm latencies (seconds) and fire alarms."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.latencies = array("d")
        self.latency_at = array("d")  # when each latency's confirm came (loop time)
        self.alarms: list[FireAlarm] = []
        self.errors: Counter[str] = Counter()

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def error(self, text: str) -> None:
        if text in self.errors or len(self.errors) < MAX_ERRORS:
            self.errors[text] += 1
        else:
            self.counts["errors_not_kept"] += 1

    def latency(self, seconds: float, at: float = 0.0) -> None:
        if len(self.latencies) < MAX_LATENCIES:
            self.latencies.append(seconds)
            self.latency_at.append(at)
        else:
            self.counts["latencies_not_kept"] += 1

    def fire_alarm(self, alarm: FireAlarm) -> None:
        self.alarms.append(alarm)

    def reset_latencies(self) -> None:
        """Forget the latency sample (a benchmark measures after its warm-up)."""
        self.latencies = array("d")
        self.latency_at = array("d")

    def latency_summary(self) -> dict[str, float | int | None]:
        """Count, p50, p90, p99, p99.9 and max of the confirm latency, in milliseconds."""
        values = sorted(self.latencies)
        out: dict[str, float | int | None] = {"count": len(values)}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999),
                        ("max", 1.0)):
            v = percentile(values, q)
            out[f"{name}_ms"] = None if v is None else round(v * 1000, 3)
        return out

    def undelivered_alarms(self) -> list[FireAlarm]:
        return [a for a in self.alarms if not a.confirmed]


@dataclass(slots=True)
class FleetReport:
    """The outcome of a run (:func:`simulators.uitd.runner.run_fleet`)."""

    config: dict[str, Any]
    ledger: FleetLedger
    elapsed_s: float
    uitds: int
    connected: int
    pending: int  # uploads queued or in flight when the run ended

    @property
    def ok(self) -> bool:
        """Every upload confirmed, every fire alarm among them, nothing failed."""
        c = self.ledger.counts
        return (self.pending == 0 and c["failed"] == 0 and not self.ledger.undelivered_alarms()
                and c["confirmed"] == c["uploads"])

    def totals(self) -> dict[str, Any]:
        c = self.ledger.counts
        return {
            "uitds": self.uitds, "connected": self.connected, "uploads": c["uploads"],
            "sent": c["uploads_sent"], "transmissions": c["transmissions"],
            "confirmed": c["confirmed"], "resends": c["resends"], "failed": c["failed"],
            "requeued": c["requeued"], "pending": self.pending,
            "fire_alarms": len(self.ledger.alarms),
            "fire_alarms_confirmed": sum(a.confirmed for a in self.ledger.alarms),
            "connects": c["connects"], "dials": c["dials"], "dial_failed": c["dial_failed"],
            "drops": c["drops"], "lost": c["lost"],
            "uploads_per_s": round(c["confirmed"] / self.elapsed_s, 1) if self.elapsed_s else 0,
        }

    def commands(self) -> dict[str, int]:
        """Answers to the centre's packets, by event and type mark (``answered_81``...)."""
        return {k: v for k, v in sorted(self.ledger.counts.items())
                if k.split("_")[0] in ("answered", "executed", "denied", "acknowledged")
                or k in ("clock_synced", "check_post", "damaged")}

    def to_data(self) -> dict[str, Any]:
        return {"version": 1, "ok": self.ok, "elapsed_s": round(self.elapsed_s, 3),
                "config": self.config, "totals": self.totals(),
                "latency": self.ledger.latency_summary(), "commands": self.commands(),
                "errors": dict(self.ledger.errors),
                "fire_alarms": [a.to_data() for a in self.ledger.alarms]}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_data(), ensure_ascii=False, indent=1) + "\n",
                        encoding="utf-8")
