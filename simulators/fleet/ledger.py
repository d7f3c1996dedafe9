"""Delivery accounting: per gateway, what was produced, acknowledged by the broker, confirmed
by the collector, refused and sent twice.

A record is **acked** when the PUBACK of the message carrying it arrived with a success reason
code, and **confirmed** when a collector's ``stored`` message of the gateway's epoch named it
(docs/wire-protocol.md, "Stored"). It is **delivered** at the gateway's deletion point: its
confirmation (``delete_on="stored"``, as the agent and the firmware do), or its PUBACK
(``delete_on="puback"``, the behaviour before issue 18, kept for comparison). A PUBACK with a
failure code (MQTT 5: ``Not authorized`` when the ACL forbids the topic) marks its records
**rejected** and is counted under ``errors``. Under MQTT 3.1.1 the broker drops a forbidden
publish silently and still acknowledges it, so no client can tell; the ledger then says acked.
Records whose message was in flight when a link dropped, and records whose confirmation did not
come within the confirm timeout, are sent again: they are listed under ``resent``, and only
those may reach a subscriber twice.

The JSON form (``FleetReport.to_json()``, ``--report FILE``) is documented in
docs/simulators.md; seq sets are compact ranges, ``[[1, 5000], [5002, 5100]]``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.wire import Priority, Record

from .ranges import SeqRanges

__all__ = ["REPORT_VERSION", "Catchup", "FleetReport", "GatewayLedger"]

REPORT_VERSION = 2
"""2: ``acked`` and ``confirmed`` beside ``delivered``, which follows the deletion point."""


@dataclass
class Catchup:
    """One return after the uplink was lost: what waited in the outbox at reconnection."""

    offline_ms: int
    """Wall-clock ms when the link was lost."""
    online_ms: int
    """Wall-clock ms of the CONNACK that ended it."""
    backlog: SeqRanges
    """Seqs waiting at that moment (including re-queued in-flight ones)."""
    alarms: int
    """How many of them are fire or alarm class: they are sent first."""

    def to_json(self) -> dict[str, Any]:
        return {"offline_ms": self.offline_ms, "online_ms": self.online_ms,
                "backlog": len(self.backlog), "alarms": self.alarms,
                "backlog_seqs": self.backlog.to_json()}


@dataclass
class GatewayLedger:
    """The accounting of one gateway."""

    gateway_id: str
    site: str
    epoch: int = 0
    """The gateway's store epoch, in every batch and health message."""
    delete_on: str = "stored"
    """The deletion point: ``stored`` (the collector's confirmation) or ``puback``."""
    produced: SeqRanges = field(default_factory=SeqRanges)
    acked: SeqRanges = field(default_factory=SeqRanges)
    """Acknowledged by the broker (a PUBACK with a success code)."""
    confirmed: SeqRanges = field(default_factory=SeqRanges)
    """Confirmed by a collector (``stored`` of this gateway's epoch)."""
    rejected: SeqRanges = field(default_factory=SeqRanges)
    resent: SeqRanges = field(default_factory=SeqRanges)
    by_priority: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    messages: int = 0
    """Record messages published (a re-sent batch counts again)."""
    acked_messages: int = 0
    confirmations: int = 0
    """``stored`` messages of this gateway's epoch received."""
    other_epoch: int = 0
    """``stored`` messages of another epoch (or none), ignored."""
    timeouts: int = 0
    """Records sent again because their confirmation did not come within the timeout."""
    connects: int = 0
    drops: int = 0
    """Planned abrupt drops (the broker published the will)."""
    lost: int = 0
    """Unplanned losses of the connection."""
    errors: Counter[str] = field(default_factory=Counter)
    catchups: list[Catchup] = field(default_factory=list)
    records: dict[int, Record] | None = None
    """Every produced record by seq, when the run keeps them (tests)."""

    @property
    def alarms(self) -> int:
        """Produced records of the fire and alarm classes."""
        return self.by_priority[Priority.FIRE] + self.by_priority[Priority.ALARM]

    @property
    def delivered(self) -> SeqRanges:
        """What the gateway could delete: confirmed (``delete_on="stored"``) or acked."""
        return self.confirmed if self.delete_on == "stored" else self.acked

    @property
    def missing(self) -> SeqRanges:
        """Produced but never delivered."""
        return self.produced.difference(self.delivered)

    @property
    def unconfirmed(self) -> SeqRanges:
        """Acked by the broker and never confirmed by a collector."""
        return self.acked.difference(self.confirmed)

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "epoch": f"{self.epoch:016x}",
            "produced": len(self.produced),
            "seqs": self.produced.to_json(),
            "acked": len(self.acked),
            "confirmed": len(self.confirmed),
            "delivered": len(self.delivered),
            "missing": self.missing.to_json(),
            "unconfirmed": self.unconfirmed.to_json(),
            "rejected": self.rejected.to_json(),
            "resent": self.resent.to_json(),
            "alarms": self.alarms,
            "by_priority": {p.label: self.by_priority[p] for p in Priority},
            "messages": self.messages,
            "acked_messages": self.acked_messages,
            "confirmations": self.confirmations,
            "other_epoch": self.other_epoch,
            "timeouts": self.timeouts,
            "connects": self.connects,
            "drops": self.drops,
            "lost": self.lost,
            "catchups": [c.to_json() for c in self.catchups],
            "errors": dict(sorted(self.errors.items())),
        }


@dataclass
class FleetReport:
    """The result of a fleet run: the ledger of every gateway plus run figures."""

    config: dict[str, object]
    started_ms: int
    production_s: float
    """Seconds from the start until production stopped."""
    elapsed_s: float
    """Seconds from the start until the last record was acknowledged (or the drain gave up)."""
    gateways: dict[str, GatewayLedger]
    errors: Counter[str] = field(default_factory=Counter)
    """Fleet-level problems (a drain that timed out...); per-gateway ones are summed in."""

    def all_errors(self) -> Counter[str]:
        total = Counter(self.errors)
        for g in self.gateways.values():
            total.update(g.errors)
        return total

    @property
    def produced(self) -> int:
        return sum(len(g.produced) for g in self.gateways.values())

    @property
    def delivered(self) -> int:
        return sum(len(g.delivered) for g in self.gateways.values())

    @property
    def acked(self) -> int:
        return sum(len(g.acked) for g in self.gateways.values())

    @property
    def confirmed(self) -> int:
        return sum(len(g.confirmed) for g in self.gateways.values())

    @property
    def messages(self) -> int:
        return sum(g.acked_messages for g in self.gateways.values())

    def lost(self) -> dict[str, SeqRanges]:
        """Per gateway, the seqs that were produced and never delivered (empty: none)."""
        out = {}
        for gw, g in self.gateways.items():
            missing = g.missing
            if missing:
                out[gw] = missing
        return out

    @property
    def ok(self) -> bool:
        """Every produced record delivered and no error of any kind."""
        return not self.lost() and not self.all_errors()

    def totals(self) -> dict[str, Any]:
        gws = self.gateways.values()
        elapsed = max(self.elapsed_s, 1e-9)
        return {
            "gateways": len(self.gateways),
            "produced": self.produced,
            "acked": self.acked,
            "confirmed": self.confirmed,
            "delivered": self.delivered,
            "missing": sum(len(m) for m in self.lost().values()),
            "rejected": sum(len(g.rejected) for g in gws),
            "resent": sum(len(g.resent) for g in gws),
            "timeouts": sum(g.timeouts for g in gws),
            "other_epoch": sum(g.other_epoch for g in gws),
            "alarms": sum(g.alarms for g in gws),
            "messages": self.messages,
            "drops": sum(g.drops for g in gws),
            "lost_connections": sum(g.lost for g in gws),
            "records_per_s": round(self.delivered / elapsed, 1),
            "messages_per_s": round(self.messages / elapsed, 1),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "ok": self.ok,
            "config": self.config,
            "started_ms": self.started_ms,
            "production_s": round(self.production_s, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "totals": self.totals(),
            "errors": dict(sorted(self.all_errors().items())),
            "gateways": {gw: g.to_json() for gw, g in self.gateways.items()},
        }

    def write(self, path: Path) -> None:
        """Write :meth:`to_json` to ``path`` (UTF-8, indented)."""
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1) + "\n",
                        encoding="utf-8")
