"""The writer stage: group, de-duplicate, store, commit, then acknowledge.

For each group of decoded messages (:class:`collector.ingest.Prepared`, in arrival order) the
writer thread runs, in this order - the order is the crash-safety argument:

1. dead-letter what the decoder refused (reason and path): acknowledged with the group;
2. ``SeqLedger.fresh``: drop records already stored (and repeats inside the group); then cut
   records from sources past ``max_sources_per_gateway`` (never a fire-class one): counted,
   and their seqs committed like dead letters';
3. effects (:class:`Effects`): webhook notifications queued durably - an alarm reaches people
   even while the database is down - and registry and risk colours updated in memory;
4. ``Sink.write`` of every new point and of the effects' points (risk colours, gateway
   states), retried with back-off (``Retry-After`` honoured) for as long as it takes:
   **nothing is acknowledged while the database is down**; the broker holds the data;
5. the registry saved, ``SeqLedger.commit``, then the PUBACKs, in arrival order.

A crash before 5 means the broker redelivers: the points are rewritten onto themselves
(idempotent times), notifications are keyed so each is queued once, the effects are applied
again (raising an active condition changes nothing), and the ledger commits. A crash between
the commit and the ack means the redelivered records are dropped as duplicates.

A write refused as *permanently* bad (HTTP 400/422, a point the store cannot hold) while the
sink accepts a known-good canary point is narrowed down message by message; the culprit is
dead-lettered (``sink_refused``) and acknowledged instead of blocking the stream forever. A
refusal because of the configuration (401/403/404: token, bucket) is an outage: retried with
back-off, never acknowledged.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from collector.config import GatewaySites, PipelineConfig
from collector.confirm import Confirmer, ResendDesk
from collector.deadletter import DeadLetters
from collector.effects import Effects
from collector.ingest import Inbound, Kind, Prepared
from collector.ledger import SeqLedger, StreamKey
from collector.metrics import Metrics
from collector.points import (
    Point,
    Storable,
    point_for_reset,
    points_for_health,
    points_for_status,
)
from collector.sinks.base import Sink, SinkError
from protocols.wire import Priority, Record

__all__ = ["Acknowledger", "Writer"]

log = logging.getLogger("firegate.collector.writer")
CONFIG_ERRORS = frozenset({401, 403, 404})
"""HTTP statuses that mean the sink is misconfigured, not that the data is bad."""
TICK_S = 0.5
REQUEST_EVERY_S = 2.0
"""How often the gap ledger is looked at for records to ask the gateways for."""
SINK_REFUSED = "sink_refused"
SOURCES_CUT = "sources_per_gateway"
"""``records_cut_total`` reason: a record from a source past ``max_sources_per_gateway``."""
CUT_LOG_EVERY_S = 300.0
"""A gateway's cut records are logged at most once per this (the counter has every one)."""
PRUNE_EVERY_S = 3600.0
"""Retention of the embedded store: how often old points are looked for ..."""
BACKLOG_FACTOR = 8
"""Items already waiting are taken into one group up to this many times
``group_max_messages``: under a backlog (10,000 UITDs, a fire alarm burst) one store write
and one ledger commit (two fsyncs) then cover hundreds of uploads instead of dozens."""
PRUNE_BATCH = 5000
"""... and how many are deleted per tick (one short transaction; the next batch waits for
the next tick, so writes go on in between)."""


class Acknowledger(Protocol):
    """What the writer needs from the MQTT side (:class:`collector.ingest.MqttIngest`)."""

    def ack(self, items: Sequence[Inbound]) -> int: ...

    def is_current(self, item: Inbound) -> bool: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Writer:
    """The writer thread (:meth:`run`); :attr:`stop` ends it after the group in hand."""

    def __init__(self, *, config: PipelineConfig, collector_id: str,
                 prepared: queue.Queue[Prepared], sink: Sink, ledger: SeqLedger,
                 deadletters: DeadLetters, effects: Effects, metrics: Metrics,
                 acker: Acknowledger, clock: Callable[[], int] = _now_ms,
                 gateways: GatewaySites | None = None, confirmer: Confirmer | None = None,
                 desk: ResendDesk | None = None) -> None:
        self.config = config
        self.gateways = gateways or GatewaySites()
        self.confirmer = confirmer
        """Publishes what each group stored (the gateways' deletion point); None: nobody."""
        self.desk = desk
        """Asks gateways for the records the gap ledger misses; None: never asked."""
        self.backlog: Callable[[int, int], list[Prepared]] | None = None
        """Items waiting outside :attr:`prepared` (the GB/T 26875.3 centre's own queue, when
        ``prepared`` was full): ``backlog(n, points)`` hands over at most ``n`` items of at
        most ``points`` points together, without waiting, from any thread."""
        self._last_request = 0.0
        self.collector_id = collector_id
        self.prepared = prepared
        self.sink = sink
        self.ledger = ledger
        self.deadletters = deadletters
        self.effects = effects
        self.metrics = metrics
        self.acker = acker
        self.clock = clock
        self.stop = threading.Event()
        self.sink_error: str | None = None
        """The last write error while the sink is failing; None when it works."""
        self.sink_down_since_ms: int | None = None
        self._last_tick = 0.0
        # Source ids taken per gateway (max_sources_per_gateway), in memory only: empty after
        # a restart, so the bound is per process life, not per database.
        self._sources: dict[str, set[str]] = {}
        self._cut_logged: dict[str, float] = {}  # gateway -> monotonic time of its last log
        self._prune_at = 0.0  # monotonic time of the next retention batch

    def run(self) -> None:
        """Gather groups and handle them until :attr:`stop`; tick the effects in between.

        Anything but a sink error (the ledger or a state file failing, say) ends the loop with
        the exception: nothing unstored was acknowledged, so the process exits and its
        supervisor starts it again (crash-only)."""
        try:
            while not self.stop.is_set():
                group = self._gather()
                if group:
                    self.handle(group)
                if time.monotonic() - self._last_tick >= TICK_S:
                    self._last_tick = time.monotonic()
                    self.effects.tick(self.clock(), self._write_extra)
                    self._retain()
                    self._request_missing()
        except Exception:
            log.exception("the writer failed; nothing unstored was acknowledged")
            raise

    def _gather(self) -> list[Prepared]:
        """A group: waits up to ``group_wait_ms`` for ``group_max_messages`` (unless the group
        carries a fire alarm: GB 26875.1 §4.1.2.3, it goes at once), but first takes
        everything already waiting - the queue, then :attr:`backlog` - up to
        ``BACKLOG_FACTOR`` x ``group_max_messages`` (adaptive: the deeper the queue, the more
        one store write and one ledger commit cover). ``group_max_points`` bounds it all."""
        try:
            first = self.prepared.get(timeout=TICK_S)
        except queue.Empty:
            return []
        group, urgent = [first], first.urgent
        points = len(first.points or ())
        cfg = self.config
        cap = cfg.group_max_messages * BACKLOG_FACTOR
        while len(group) < cap and points < cfg.group_max_points:
            try:
                item = self.prepared.get_nowait()
            except queue.Empty:
                break
            group.append(item)
            points += len(item.points or ())
            urgent |= item.urgent
        if self.backlog is not None and len(group) < cap and points < cfg.group_max_points:
            for item in self.backlog(cap - len(group), cfg.group_max_points - points):
                group.append(item)
                points += len(item.points or ())
                urgent |= item.urgent
        deadline = time.monotonic() + cfg.group_wait_ms / 1000
        while len(group) < cfg.group_max_messages and points < cfg.group_max_points:
            try:
                item = self.prepared.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if urgent or remaining <= 0:
                    break
                try:
                    item = self.prepared.get(timeout=remaining)
                except queue.Empty:
                    break
            group.append(item)
            points += len(item.points or ())
            urgent |= item.urgent
        return group

    # -- one group ---------------------------------------------------------------------------

    def handle(self, group: list[Prepared]) -> bool:
        """Store, commit and acknowledge ``group``. False if it was given up before it was
        stored (stopping, or all of it arrived on a lost connection): nothing acknowledged,
        the broker redelivers."""
        now = self.clock()
        parts: list[tuple[Prepared, Sequence[Storable]]] = []
        fresh: dict[int, Sequence[Record]] = {}
        in_group: dict[StreamKey, set[int]] = {}
        sites: dict[str, str] = {}  # sites named earlier in this group (not yet in the registry)
        dead_seqs: dict[StreamKey, list[int]] = {}  # seqs dead-lettered alone or cut
        for item in group:
            if (refusal := self._site_refusal(item, sites)) is not None:
                self._dead_letter(item.inbound, *refusal)
                continue
            if item.kind in (Kind.BATCH, Kind.HEALTH):
                self._note_epoch(item, sites, now)
            if item.kind is Kind.BATCH and item.faults:
                self._dead_letter_records(item, dead_seqs)
            if item.kind is Kind.BATCH and item.batch is not None:
                assert item.points is not None
                gw, records = item.batch.gateway_id, item.batch.records
                key = (gw, item.epoch)
                if item.batch.site is not None:
                    sites[gw] = item.batch.site
                flags = self.ledger.fresh(gw, [r.seq for r in records], item.epoch)
                seen = in_group.setdefault(key, set())
                if all(flags) and not seen.intersection(r.seq for r in records):
                    points, kept = item.points, records
                else:
                    keep = [i for i, ok in enumerate(flags) if ok and records[i].seq not in seen]
                    points = [item.points[i] for i in keep]
                    kept = tuple(records[i] for i in keep)
                    self.metrics.duplicates.inc(n=len(records) - len(keep))
                seen.update(r.seq for r in kept)
                if kept and (over := self._past_source_cap(gw, kept)):
                    points, kept = self._cut(key, over, points, kept, dead_seqs)
                fresh[id(item)] = kept
                parts.append((item, points))
            elif item.kind is Kind.STATUS:
                assert item.status is not None
                if item.status.site is not None:
                    sites[item.status.gateway_id] = item.status.site
                parts.append((item, points_for_status(
                    item.status, received_ms=item.inbound.received_ms)))
            elif item.kind is Kind.HEALTH:
                assert item.health is not None and item.gateway_id is not None
                site = sites.get(item.gateway_id) or \
                    self.effects.registry.site_of(item.gateway_id)
                cfg = self.config
                health = points_for_health(item.health, site,
                                           max_counters=cfg.max_health_counters,
                                           max_links=cfg.max_health_links)
                for kind in ("counters", "links"):
                    if cut := health[0].field(f"{kind}_cut"):
                        self.metrics.health_entries_cut.inc(kind, n=float(cut))
                parts.append((item, health))
            elif item.kind is Kind.ACK and self.desk is not None:
                self.desk.answer(item, now)
            elif item.kind is Kind.REJECT:
                assert item.error is not None
                self._dead_letter(item.inbound, item.error.reason.value, item.error.path or None)
        fresh_parts = [(item, fresh.get(id(item), ())) for item, _ in parts]
        extra = self.effects.apply(fresh_parts, now) + self.effects.take_pending()
        if extra:
            parts.append((group[0], extra))  # same write; never refused (not a message)
        refused = self._store(parts, give_up=True, own=extra)
        if refused is None:
            self.effects.pending += extra  # effects are applied: their points go later
            return False
        stored = [(item, recs) for item, recs in fresh_parts if id(item) not in refused]
        self.effects.commit()
        commits: dict[StreamKey, list[int]] = {}
        for item, recs in stored:
            if recs and item.gateway_id is not None:
                commits.setdefault((item.gateway_id, item.epoch), []).extend(
                    r.seq for r in recs)
        n_stored = sum(len(s) for s in commits.values())
        for key, seqs in dead_seqs.items():  # accounted for: no gap, and once only
            commits.setdefault(key, []).extend(seqs)
        self._commit(commits, now)
        if self.confirmer is not None:  # stored and committed: the gateways may delete them
            self.confirmer.confirm(group, now)
        self.acker.ack([item.inbound for item in group])
        self.metrics.records_stored.inc(n=n_stored)
        done = time.perf_counter_ns()
        for item in group:
            if item.urgent:
                self.metrics.latency_seconds.observe((done - item.inbound.received_ns) / 1e9)
        return True

    def _request_missing(self) -> None:
        if self.desk is None or time.monotonic() - self._last_request < REQUEST_EVERY_S:
            return
        self._last_request = time.monotonic()
        self.desk.request(self.ledger.gaps(), self.clock())

    def _commit(self, commits: dict[StreamKey, list[int]], now_ms: int) -> None:
        # One transaction (one fsync) for the whole group: one per gateway would dominate a
        # group's cost with many small batches.
        self.ledger.commit_many(commits, now_ms)

    def _note_epoch(self, item: Prepared, sites: dict[str, str], now_ms: int) -> None:
        """A batch or health in an epoch new for its gateway: the gateway's store is new
        (docs/wire-protocol.md, "Epochs"). Counted, logged, stored as ``fg_reset`` with the
        old epoch's final state; the old epoch's gaps close as lost."""
        gw = item.gateway_id
        assert gw is not None
        reset = self.ledger.note_epoch(gw, item.epoch, now_ms)
        if reset is None:
            return
        self.metrics.gateway_resets.inc()
        log.warning("gateway %s began a new epoch %016x (its store is new): the old epoch "
                    "%016x ended at seq %d with %d records never stored", gw, reset.new_epoch,
                    reset.old_epoch, reset.old_highest, reset.old_missing)
        site = sites.get(gw) or self.effects.registry.site_of(gw)
        self.effects.pending.append(point_for_reset(reset, site))

    def _site_refusal(self, item: Prepared, named: dict[str, str]) -> tuple[str, str] | None:
        """(reason, path) when ``item``'s gateway may not speak for the site it names, or is
        not taken at all (``[gateways]``): a gateway's credentials must not turn another
        site red. ``named``: sites bound earlier in this group, not yet in the registry."""
        gw = item.gateway_id
        policy = self.gateways.unknown
        if gw is None or item.kind not in (Kind.BATCH, Kind.STATUS, Kind.HEALTH) or \
                policy == "open":
            return None
        bound = self.gateways.bound(gw)
        if bound is None and policy == "refuse":
            return "unknown_gateway", "gw"
        site = item.batch.site if item.batch is not None else \
            item.status.site if item.status is not None else None
        if site is None:
            return None
        if bound is None:  # bind_first: the registry remembers the first site named
            bound = named.get(gw) or self.effects.registry.site_of(gw)
        if bound is not None and site != bound:
            self.metrics.site_mismatch.inc()
            return "site_mismatch", "site"
        return None

    def _past_source_cap(self, gw: str, records: Sequence[Record]) -> list[int] | None:
        """Positions of ``records`` to cut: from a source beyond the gateway's first
        ``max_sources_per_gateway`` (since start), and not fire-class - a fire alarm is stored
        whatever its source (life safety before cardinality). None: keep all (the usual case,
        one set operation per batch)."""
        known = self._sources.get(gw)
        if known is None:
            known = self._sources[gw] = set()
        new = {r.source.id for r in records}
        new.difference_update(known)
        if not new:
            return None
        cap = self.config.max_sources_per_gateway
        if len(known) + len(new) <= cap:
            known |= new
            return None
        over = []
        for i, r in enumerate(records):  # in order: the first sources seen are the ones taken
            sid = r.source.id
            if sid in known:
                continue
            if len(known) < cap:
                known.add(sid)
            elif r.priority is not Priority.FIRE:
                over.append(i)  # a fire alarm's source is not taken: the set stays bounded
        return over or None

    def _cut(self, key: StreamKey, over: list[int], points: Sequence[Storable],
             records: Sequence[Record], done_seqs: dict[StreamKey, list[int]]
             ) -> tuple[list[Storable], tuple[Record, ...]]:
        """Leave out the records at ``over`` (and their points): counted, logged now and then,
        and their seqs committed with the group - accounted for, not a gap, and a redelivery
        is a duplicate."""
        drop = set(over)
        keep = [i for i in range(len(records)) if i not in drop]
        done_seqs.setdefault(key, []).extend(records[i].seq for i in over)
        gw = key[0]
        self.metrics.records_cut.inc(SOURCES_CUT, n=len(over))
        now = time.monotonic()
        last = self._cut_logged.get(gw)
        if last is None or now - last >= CUT_LOG_EVERY_S:
            self._cut_logged[gw] = now
            log.warning("gateway %s sends from more than %d sources (max_sources_per_gateway):"
                        " %d records from new sources not stored (e.g. %r; counted in "
                        "records_cut_total, fire alarms always stored)", gw,
                        self.config.max_sources_per_gateway, len(over),
                        records[over[0]].source.id[:100])
        return [points[i] for i in keep], tuple(records[i] for i in keep)

    def _dead_letter_records(self, item: Prepared, dead_seqs: dict[StreamKey, list[int]]
                             ) -> None:
        """Dead-letter each record of a batch that did not decode, alone: the payload kept is
        the record itself, the path names it (``recs[3].u``). Its seq, when valid, is
        committed with the group: the record is accounted for (a dead letter, not a gap), and
        a later record under the same seq is a duplicate."""
        gw = item.gateway_id
        assert gw is not None
        for fault in item.faults:
            if fault.seq is not None:
                dead_seqs.setdefault((gw, item.epoch), []).append(fault.seq)
            reason = fault.error.reason.value
            self.deadletters.add(item.inbound.topic, fault.raw, reason, fault.error.path or None,
                                 self.clock())
            self.metrics.dead_letters.inc(reason)
            self.metrics.records_dead_lettered.inc()
            log.warning("dead letter %s on %s at %s (the rest of its batch is stored)", reason,
                        item.inbound.topic[:100], fault.error.path)

    def _dead_letter(self, inbound: Inbound, reason: str, path: str | None) -> None:
        self.deadletters.add(inbound.topic, inbound.payload, reason, path, self.clock())
        self.metrics.dead_letters.inc(reason)
        log.warning("dead letter %s on %s%s", reason, inbound.topic[:100],
                    f" at {path}" if path else "")

    # -- writing -----------------------------------------------------------------------------

    def _store(self, parts: list[tuple[Prepared, Sequence[Storable]]], *, give_up: bool,
               own: list[Point] | None = None) -> set[int] | None:
        """Write every part's points, retrying until it works. Returns the ids of parts the
        sink refused for good (dead-lettered), or None when stopping - or, with ``give_up``,
        when no message of the group can be acknowledged any more. ``own`` is the part that
        holds the collector's own points (never dead-lettered: dropped if refused)."""
        points = [p for _, pts in parts for p in pts]
        if not points:
            return set()
        attempt = 0
        while True:
            try:
                self._write(points)
                return set()
            except SinkError as e:
                if e.permanent and e.status not in CONFIG_ERRORS and self._canary_ok():
                    if give_up:
                        return self._isolate(parts, own)
                    self._drop_own(points, e)
                    return set()
                if not self._wait(e, attempt, [i for i, _ in parts] if give_up else None):
                    return None
                attempt += 1

    def _isolate(self, parts: list[tuple[Prepared, Sequence[Storable]]], own: list[Point] | None
                 ) -> set[int] | None:
        refused: set[int] = set()
        for item, points in parts:
            attempt = 0
            while points:
                try:
                    self._write(points)
                    break
                except SinkError as e:
                    if e.permanent and e.status not in CONFIG_ERRORS:
                        if points is own:
                            self._drop_own(points, e)
                            break
                        self.metrics.sink_errors.inc("refused")
                        self._dead_letter(item.inbound, SINK_REFUSED, f"sink: {e}"[:200])
                        refused.add(id(item))
                        break
                    if not self._wait(e, attempt, [item]):
                        return None
                    attempt += 1
        return refused

    def _write(self, points: Sequence[Storable]) -> None:
        start = time.perf_counter()
        self.sink.write(points)
        self.metrics.write_seconds.observe(time.perf_counter() - start)
        if self.sink_error is not None:
            log.warning("sink %s writes again (after: %s)", self.sink.name, self.sink_error)
            self.sink_error = self.sink_down_since_ms = None

    def _canary_ok(self) -> bool:
        """Does the sink take a known-good point? Tells a bad message from a bad sink."""
        canary = Point("fg_collector", (("collector", self.collector_id),), (("alive", True),),
                       time.time_ns())
        try:
            self.sink.write([canary])
            return True
        except SinkError:
            return False

    def _wait(self, error: SinkError, attempt: int, items: list[Prepared] | None) -> bool:
        """Back off after a failed write. False: give the group up (stopping, or none of
        ``items`` can be acknowledged any more, so the broker redelivers all of them)."""
        kind = "config" if error.status in CONFIG_ERRORS else \
            "refused" if error.permanent else "transient"
        self.metrics.sink_errors.inc(kind)
        if self.sink_error is None:
            self.sink_down_since_ms = self.clock()
            log.error("sink %s write failed (%s): %s; holding acknowledgements, retrying",
                      self.sink.name, kind, error)
        self.sink_error = str(error)[:300]
        delay = min(self.config.retry_max_s, self.config.retry_min_s * 2 ** min(attempt, 20))
        delay *= 0.5 + random.random() / 2  # jitter: collectors sharing a database spread out
        if error.retry_after_s is not None:
            delay = max(delay, min(error.retry_after_s, self.config.retry_max_s))
        if self.stop.wait(delay):
            return False
        return items is None or any(self.acker.is_current(i.inbound) for i in items)

    def _write_extra(self, points: list[Point]) -> bool:
        """For the periodic tick: one try, never blocking the loop on a sink that is down.
        False: keep the points for the next tick."""
        try:
            self._write(points)
            return True
        except SinkError as e:
            if e.permanent and e.status not in CONFIG_ERRORS and self._canary_ok():
                self._drop_own(points, e)
                return True
            self.metrics.sink_errors.inc("transient")
            self.sink_error = str(e)[:300]
            return False

    def _retain(self) -> None:
        """The embedded store's retention (``[store] retention_days``), from the periodic
        tick: hourly, then one bounded batch per tick while old points are left, so a large
        delete never holds a fire alarm's write for more than one short transaction. A sink
        without ``prune`` (InfluxDB: the bucket's retention) is left alone."""
        prune = getattr(self.sink, "prune", None)
        if prune is None or time.monotonic() < self._prune_at:
            return
        try:
            deleted = int(prune(self.clock(), limit=PRUNE_BATCH))
        except SinkError as e:
            log.warning("sink %s: deleting points past retention failed (%s); trying again in "
                        "a minute", self.sink.name, e)
            self._prune_at = time.monotonic() + 60.0
            return
        if deleted:
            self.metrics.store_pruned.inc(n=deleted)
        self._prune_at = time.monotonic() + (0.0 if deleted >= PRUNE_BATCH else PRUNE_EVERY_S)

    def _drop_own(self, points: Sequence[Storable], error: SinkError) -> None:
        # The collector's own points (risk, gateway, gaps) refused for good while the sink
        # takes others: no MQTT message waits for them, so they are dropped, loudly, rather
        # than stalling every gateway's records behind them.
        self.metrics.sink_errors.inc("refused")
        log.error("sink %s refused %d of the collector's own points (%s): dropped",
                  self.sink.name, len(points), error)
