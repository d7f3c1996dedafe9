"""The collector's side of "delivered means stored" (docs/wire-protocol.md, "Stored").

* :class:`Confirmer`: after a write group is stored and committed, and before its messages
  are acknowledged to the broker, tell each gateway which seqs of which epoch are now safe
  with the collector (``firegate/v1/<gw>/stored``): every record of every batch message in the
  group - stored now, stored before (a resend whose first confirmation was lost), or accounted
  for (dead-lettered alone, cut by a bound). Only then may the gateway delete them. Items
  that did not come over MQTT (a UITD's uploads, collector/uitd/) get none: a UITD is
  confirmed on its own link.
* :class:`ResendDesk`: ask a gateway for what the gap ledger finds missing (command
  ``resend``), so a gap closes by itself while the gateway still holds the records, and is
  settled as a real loss (:meth:`collector.ledger.SeqLedger.mark_lost`) when the gateway says
  it no longer has them.

Both publish through the collector's own MQTT connection and never block the writer: a
confirmation not sent (disconnected) is made up for by the gateway's resend after its confirm
timeout; a request not answered is asked again later.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from collector.ingest import Kind, Prepared
from collector.ledger import Gap, SeqLedger, StreamKey
from collector.metrics import Metrics
from protocols.wire import (
    Channel,
    Command,
    CommandName,
    Stored,
    WireError,
    encode_command,
    encode_stored,
    seq_ranges,
    split_ranges,
    topic,
)

__all__ = ["Confirmer", "ResendDesk"]

log = logging.getLogger("firegate.collector.confirm")

MAX_MISSING_RANGES = 10_000
"""Ranges of one ``resend`` answer looked at (an answer is bounded by the payload size too)."""

Publish = Callable[[str, bytes], bool]
"""Publish a payload on a topic with QoS 1; False when it could not be queued."""


class Confirmer:
    """Publishes the ``stored`` confirmations of a write group."""

    def __init__(self, publish: Publish, collector_id: str, metrics: Metrics) -> None:
        self.publish = publish
        self.collector_id = collector_id
        self.metrics = metrics

    def confirm(self, group: Sequence[Prepared], now_ms: int) -> None:
        seqs: dict[StreamKey, list[int]] = {}
        for item in group:
            if item.kind is not Kind.BATCH or item.gateway_id is None or \
                    not item.inbound.confirm_over_mqtt:  # a UITD's: confirmed on its link
                continue
            bucket = seqs.setdefault((item.gateway_id, item.epoch), [])
            if item.batch is not None:
                bucket.extend([r.seq for r in item.batch.records])
            bucket.extend([f.seq for f in item.faults if f.seq is not None])
        for (gw, epoch), found in seqs.items():
            if not found:
                continue
            where = topic(gw, Channel.STORED)
            for part in split_ranges(seq_ranges(found)):
                payload = encode_stored(Stored(gw, epoch, tuple(part), now_ms,
                                               self.collector_id))
                if self.publish(where, payload):
                    self.metrics.confirmations.inc("sent")
                else:
                    self.metrics.confirmations.inc("not_connected")


@dataclass(frozen=True, slots=True)
class _Request:
    gateway_id: str
    epoch: int
    first: int
    last: int
    asked_ms: int


class ResendDesk:
    """Requests for missing records, and what the answers settle."""

    def __init__(self, publish: Publish, ledger: SeqLedger, metrics: Metrics, *,
                 after_s: float, every_s: float, max_per_tick: int = 100) -> None:
        self.publish = publish
        self.ledger = ledger
        self.metrics = metrics
        self.after_ms = int(after_s * 1000)
        self.every_ms = int(every_s * 1000)
        self.max_per_tick = max_per_tick
        self._asked: dict[tuple[str, int, int, int], int] = {}  # gap -> when asked
        self._open: dict[str, _Request] = {}  # command id -> request
        self._ids = itertools.count(1)

    def request(self, gaps: Sequence[Gap], now_ms: int) -> int:
        """Ask for every gap open at least ``after_s`` and not asked within ``every_s``
        (at most ``max_per_tick`` requests a call); returns how many were sent."""
        live = {(g.gateway_id, g.epoch, g.first, g.last) for g in gaps}
        self._asked = {k: t for k, t in self._asked.items() if k in live}
        self._open = {i: r for i, r in self._open.items() if now_ms - r.asked_ms < 600_000}
        sent = 0
        for g in gaps:
            key = (g.gateway_id, g.epoch, g.first, g.last)
            if now_ms - g.since_ms < self.after_ms or \
                    now_ms - self._asked.get(key, -self.every_ms) < self.every_ms:
                continue
            if sent >= self.max_per_tick:
                break
            cid = f"resend-{next(self._ids)}-{now_ms % 10**9}"
            args: dict[str, str | int | float | bool] = {"first": g.first, "last": g.last}
            if g.epoch:
                args["ep"] = f"{g.epoch:016x}"
            try:
                payload = encode_command(Command(cid, CommandName.RESEND, now_ms, args=args,
                                                 ttl_s=300))
            except WireError:  # a seq past the contract's range: nothing a gateway could send
                continue
            self._asked[key] = now_ms
            if self.publish(topic(g.gateway_id, Channel.CMD), payload):
                self._open[cid] = _Request(g.gateway_id, g.epoch, g.first, g.last, now_ms)
                self.metrics.resend_requests.inc()
                sent += 1
        return sent

    def answer(self, item: Prepared, now_ms: int) -> None:
        """A gateway's ``cmd/ack``: if it answers a request of ours, the ranges it no longer
        has are settled as lost (no longer a gap; counted and logged)."""
        ack = item.ack
        if ack is None:
            return
        request = self._open.get(ack.id)
        if request is None or item.gateway_id != request.gateway_id:
            return  # another gateway's answer (a guessed id) leaves our request open
        del self._open[ack.id]
        if not ack.ok or ack.result is None:
            log.warning("gateway %s could not resend %d..%d: %s", request.gateway_id,
                        request.first, request.last, ack.error)
            return
        missing = ack.result.get("missing")
        lost = 0
        if isinstance(missing, list):
            for pair in missing[:MAX_MISSING_RANGES]:
                if not isinstance(pair, list) or len(pair) != 2:
                    continue
                first, last = pair
                if isinstance(first, int) and isinstance(last, int):
                    # only what was asked: a gateway cannot settle other seqs
                    a, b = max(first, request.first), min(last, request.last)
                    if a <= b:
                        lost += self.ledger.mark_lost(request.gateway_id, a, b, now_ms,
                                                      request.epoch)
        if lost:
            self.metrics.records_lost.inc(n=lost)
            log.warning("gateway %s no longer has %d record(s) of %d..%d (epoch %016x): "
                        "lost, counted in records_lost_total", request.gateway_id, lost,
                        request.first, request.last, request.epoch)
