"""What stored messages change besides the database: the gateway registry, the sites' risk
colours, webhook notifications; and the writer's periodic work (stale heartbeats, gaps and
their alarms, requests for missing records, the status snapshot). Runs on the writer thread
only (:mod:`collector.writer`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from collector.alarms.book import AlarmBook, Signal, event_signal, gateway_signal
from collector.config import GATEWAY_OFFLINE, GATEWAY_ONLINE, RECORDS_MISSING, PipelineConfig
from collector.ingest import Kind, Prepared
from collector.ledger import Gap, SeqLedger
from collector.metrics import Metrics
from collector.notify import Notification, Notifier, event_body, gateway_body
from collector.points import Point, point_for_gap, point_for_risk, points_for_status
from collector.registry import Registry, Transition
from collector.risk import RiskBoard
from collector.uitd.upstream_queue import Offer
from protocols.wire import Event, GatewayState, Measurement, Quantity, Record, Status

__all__ = ["Effects"]

log = logging.getLogger("firegate.collector.effects")
SETTLE_EVERY_S = 3600.0
"""How often gaps past ``gap_max_age_s`` are looked for (and at start)."""

class Effects:
    """What stored messages change besides the database: the gateway registry, the sites'
    risk colours, webhook notifications; plus the periodic work (stale heartbeats, gaps, the
    status snapshot). Runs on the writer thread only."""

    def __init__(self, *, registry: Registry, risk: RiskBoard, notifier: Notifier | None,
                 ledger: SeqLedger, metrics: Metrics, config: PipelineConfig,
                 connected_for: Callable[[], float | None], report_gaps: bool = True,
                 snapshot: Callable[[int], dict[str, object]] | None = None,
                 collector_id: str = "collector",
                 forward: Callable[[Sequence[Offer]], int] | None = None,
                 alarms: AlarmBook | None = None) -> None:
        self.registry = registry
        self.risk = risk
        self.notifier = notifier
        self.ledger = ledger
        self.metrics = metrics
        self.config = config
        self.connected_for = connected_for
        self.report_gaps = report_gaps
        self.snapshot = snapshot
        self.collector_id = collector_id
        self.alarms = alarms
        """The alarm book (docs/alarms.md): fed what opens, clears and resets alarms."""
        self._signals: list[Signal] = []
        self.forward = forward
        """Queues stored events for higher centres (collector/uitd/upstream.py); durable
        when it returns, so before the acknowledgement, like notifications."""
        self.pending: list[Point] = []
        """Points of the periodic work not yet written (the sink was down)."""
        self._reported_gaps: set[tuple[str, int, int]] = set()
        self._missing_since: dict[str, int] = {}  # gateway -> when its records_missing rose
        self._last_settle = 0.0
        self._last_snapshot = 0.0
        watch = {Quantity.PRESSURE} if risk.rules.pressure_critical_mpa is not None else set()
        if risk.rules.level_critical_m is not None:
            watch.add(Quantity.LEVEL)
        self._watch = frozenset(watch)

    def _site(self, gateway_id: str, site: str | None = None) -> str:
        # A gateway without a site id is its own site.
        return site or self.registry.site_of(gateway_id) or gateway_id

    def apply(self, stored: Sequence[tuple[Prepared, Sequence[Record]]], now_ms: int
              ) -> list[Point]:
        """Apply the new records and messages of a group (about to be written); returns the
        points of what changed (risk colours). Notifications are queued durably before this
        returns."""
        changed: set[str] = set()
        notes: list[Notification] = []
        offers: list[Offer] | None = [] if self.forward is not None else None
        risk, registry, notifier, watch = self.risk, self.registry, self.notifier, self._watch
        signals = self._signals if self.alarms is not None else None
        for item, records in stored:
            gw = item.gateway_id
            if gw is None:
                continue
            transition = None
            if item.kind is Kind.BATCH:
                assert item.batch is not None
                transition = registry.seen(gw, item.batch.site, now_ms)
                site = self._site(gw, item.batch.site)
                for r in records:
                    if r.__class__ is Event:
                        assert isinstance(r, Event)
                        if risk.apply_event(site, gw, r, item.epoch):
                            changed.add(site)
                        if signals is not None and (s := event_signal(gw, site, r, item.epoch)):
                            signals.append(s)
                        if offers is not None:
                            offers.append(Offer(gw, item.epoch, site, r))
                        if notifier is not None and notifier.wants(r.type.value, r.active):
                            colour = risk.assess(site).colour.value
                            notes.append(Notification(r.type.value, f"event:{gw}:{r.seq}",
                                                      event_body(gw, site, r, colour=colour),
                                                      r.active, gateway=gw,
                                                      source=r.source.id))
                    elif watch and r.quantity in watch:  # type: ignore[union-attr]
                        assert isinstance(r, Measurement)
                        if risk.apply_measurement(site, gw, r, item.epoch):
                            changed.add(site)
            elif item.kind is Kind.STATUS:
                assert item.status is not None
                transition = registry.on_status(item.status, now_ms)
            elif item.kind is Kind.HEALTH:
                assert item.health is not None
                transition = registry.on_health(item.health, now_ms)
                if self.ledger.note_last_seq(gw, item.health.last_seq, now_ms,
                                             item.health.epoch):
                    self.metrics.seq_regressions.inc()
                    log.warning("gateway %s: its last seq went back to %d inside epoch %016x "
                                "(a store restored from an older copy?)", gw,
                                item.health.last_seq, item.health.epoch)
            if transition is not None:
                self._transition(transition, changed, notes)
        if notes and notifier is not None:
            notifier.enqueue(notes)
        if offers and self.forward is not None:
            self.forward(offers)
        self._feed_alarms(now_ms)
        return self._assess(changed, now_ms)

    def _feed_alarms(self, now_ms: int) -> None:
        """The alarm book takes what was gathered (persisted, due steps queued, on return)."""
        if self.alarms is not None and self._signals:
            signals, self._signals = self._signals, []
            self.alarms.apply(signals, now_ms)

    def _transition(self, t: Transition, changed: set[str], notes: list[Notification]) -> None:
        site = self._site(t.gateway_id, t.site)
        if self.risk.set_gateway_offline(site, t.gateway_id, not t.online, t.time_ms):
            changed.add(site)
        if self.alarms is not None and (not t.online or t.previous == "offline"):
            self._signals.append(gateway_signal(t.gateway_id, site, GATEWAY_OFFLINE,
                                                not t.online, t.reason))
        if self.notifier is None or (t.online and t.previous != "offline"):
            return  # a gateway seen for the first time is not news
        kind = GATEWAY_ONLINE if t.online else GATEWAY_OFFLINE
        if self.notifier.wants(kind, not t.online):
            notes.append(Notification(kind, t.key, gateway_body(
                t.gateway_id, t.site, kind, t.key, t.time_ms, t.reason), not t.online,
                gateway=t.gateway_id))

    def _assess(self, sites: set[str], now_ms: int) -> list[Point]:
        points = []
        for site in sorted(sites):
            a = self.risk.assess(site)
            if self.registry.set_site(a, now_ms):
                points.append(point_for_risk(site, a.colour.value, a.reasons, now_ms))
                if self.alarms is not None:
                    self.alarms.site_changed(site, a.colour.value, a.reasons, now_ms)
        raised, cleared = self.risk.take_changes()
        self.registry.record_conditions(raised, cleared)
        return points

    def take_pending(self) -> list[Point]:
        """The periodic work's points not written yet, to go with the next write."""
        points, self.pending = self.pending, []
        return points

    def commit(self) -> None:
        """Persist the registry (after the points of its changes were written)."""
        self.registry.flush()

    def tick(self, now_ms: int, write: Callable[[list[Point]], bool]) -> None:
        """Periodic work: stale heartbeats, gaps, gauges, the status snapshot."""
        limit_s = self.config.health_interval_s * self.config.offline_factor
        connected = self.connected_for()
        # Only judge heartbeats after being connected for a whole period: after a restart the
        # broker is still delivering what the gateways sent meanwhile.
        if connected is not None and connected >= limit_s:
            changed: set[str] = set()
            notes: list[Notification] = []
            for t in self.registry.check_stale(now_ms, int(limit_s * 1000)):
                self.pending += points_for_status(Status(
                    t.gateway_id, GatewayState.OFFLINE, now_ms, site=t.site, reason=t.reason))
                self._transition(t, changed, notes)
            if notes and self.notifier is not None:
                self.notifier.enqueue(notes)
            self._feed_alarms(now_ms)
            self.pending += self._assess(changed, now_ms)
        if time.monotonic() - self._last_snapshot >= self.config.snapshot_interval_s:
            self._last_snapshot = time.monotonic()
            self._periodic(now_ms)
        if self.pending and write(self.pending):
            self.pending = []
        self.registry.flush()

    def _periodic(self, now_ms: int) -> None:
        states: dict[tuple[str, ...], float] = {("online",): 0, ("offline",): 0, ("unknown",): 0}
        for info in self.registry.gateways.values():
            states[(info.state,)] = states.get((info.state,), 0) + 1
        self.metrics.gateways.replace(states)
        colours: dict[tuple[str, ...], float] = {("green",): 0, ("yellow",): 0, ("red",): 0}
        for s in self.registry.sites.values():
            colours[(s.colour,)] += 1
        self.metrics.sites.replace(colours)
        if self.notifier is not None:
            self.metrics.notify_pending.set(self.notifier.pending())
        if self.report_gaps:
            grace_ms = self.config.gap_grace_s * 1000
            gaps = [g for g in self.ledger.gaps() if now_ms - g.since_ms >= grace_ms]
            self.metrics.gap_ranges.set(len(gaps))
            self.metrics.gaps.set(sum(g.missing for g in gaps))
            keys = {(g.gateway_id, g.first, g.last) for g in gaps}
            for g in gaps:
                if (g.gateway_id, g.first, g.last) not in self._reported_gaps:
                    self.pending.append(point_for_gap(g.gateway_id, g.first, g.last, now_ms))
            self._reported_gaps = keys
            self._missing_alarms(gaps, now_ms)
            if time.monotonic() - self._last_settle >= SETTLE_EVERY_S:
                self._last_settle = time.monotonic()
                self._settle(now_ms)
        self.ledger.flush()
        if self.snapshot is not None:
            self.registry.save_snapshot(self.collector_id, now_ms, self.snapshot(now_ms))

    def _settle(self, now_ms: int) -> None:
        """Gaps open longer than ``gap_max_age_s`` are settled as lost (counted, logged)."""
        before = now_ms - int(self.config.gap_max_age_s * 1000)
        for g in self.ledger.settle_older_than(before, now_ms):
            self.metrics.records_lost.inc(n=g.missing)
            log.warning("gateway %s: seqs %d..%d missing for more than %.0f s: settled as lost",
                        g.gateway_id, g.first, g.last, self.config.gap_max_age_s)

    def _missing_alarms(self, gaps: Sequence[Gap], now_ms: int) -> None:
        """A gap not closed within ``gap_grace_s`` is an alarm for its gateway
        (``records_missing``): a warning in the log, a counter, a condition that colours the
        site, a notification - the same path as any alarm. Cleared when the gateway has no
        such gap left (the records came, or the gateway said they are lost)."""
        missing: dict[str, list[Gap]] = {}
        for g in gaps:
            missing.setdefault(g.gateway_id, []).append(g)
        raised = self.risk.missing_records()
        changed: set[str] = set()
        notes: list[Notification] = []
        for gw in sorted(missing.keys() - raised):
            n = sum(g.missing for g in missing[gw])
            text = ", ".join(f"{g.first}..{g.last}" for g in missing[gw][:5]) + \
                (" ..." if len(missing[gw]) > 5 else "")
            site = self._site(gw)
            log.warning("gateway %s: %d record(s) missing for more than %.0f s (seqs %s); "
                        "asked for again, lost if the gateway no longer has them", gw, n,
                        self.config.gap_grace_s, text)
            self.metrics.gap_alarms.inc()
            if self.risk.set_records_missing(site, gw, True, now_ms,
                                             f"{n} record(s) missing: seqs {text}"):
                changed.add(site)
            self._missing_since[gw] = now_ms
            notes += self._missing_note(gw, site, now_ms, True, f"{n} missing: seqs {text}")
            if self.alarms is not None:
                self._signals.append(gateway_signal(gw, site, RECORDS_MISSING, True,
                                                    f"{n} record(s) missing: seqs {text}"))
        for gw in sorted(raised - missing.keys()):
            site = self._site(gw)
            if self.risk.set_records_missing(site, gw, False, now_ms):
                changed.add(site)
            log.info("gateway %s: no records missing any more", gw)
            notes += self._missing_note(gw, site, now_ms, False, None)
            if self.alarms is not None:
                self._signals.append(gateway_signal(gw, site, RECORDS_MISSING, False))
        if notes and self.notifier is not None:
            self.notifier.enqueue(notes)
        self._feed_alarms(now_ms)
        self.pending += self._assess(changed, now_ms)

    def _missing_note(self, gw: str, site: str, now_ms: int, active: bool,
                      reason: str | None) -> list[Notification]:
        if self.notifier is None or not self.notifier.wants(RECORDS_MISSING, active):
            return []
        since = self._missing_since.get(gw, now_ms)
        key = f"missing:{gw}:{since}" + ("" if active else ":cleared")
        return [Notification(RECORDS_MISSING, key, gateway_body(
            gw, site, RECORDS_MISSING, key, now_ms, reason, active=active), active, gateway=gw)]
