"""collector/writer.py at unit level, for the mutation run (issue 19): nothing is acknowledged
that is not stored and committed; duplicates dropped and counted; dead letters and cut records
committed; what a group gathers; the source cap; epochs; the store's outages and refusals.

The writer runs over its real collaborators, built as :mod:`collector.app` wires them: the
embedded SQLite store on a temp file, the real :class:`SeqLedger`, :class:`DeadLetters`,
:class:`Registry`, :class:`RiskBoard`, :class:`Effects`, :class:`Confirmer` and
:class:`ResendDesk`. Three stand-ins, each for a boundary:

* :class:`Broker` - the MQTT broker: it takes the PUBACKs (the writer's ``acker``) and the
  publishes of the confirmer and the resend desk, and notes, at the instant of each ack, what
  the store holds (read through a second connection) and what the ledger has committed;
* :class:`FaultySink` - the database's failures: the real store behind a failure injector
  (outages, HTTP statuses, ``Retry-After``), which also notes every write it is asked for;
* :class:`Clock` - time: the writer's stop event, whose ``wait`` notes the back-off asked for
  and returns at once (no test sleeps through a back-off).

Items are :class:`Prepared` made by the decoder's own :func:`prepare` from wire payloads."""

from __future__ import annotations

import logging
import queue
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from collector.config import GatewaySites, PipelineConfig, RiskRules
from collector.confirm import Confirmer, ResendDesk
from collector.deadletter import DeadLetters
from collector.effects import Effects
from collector.ingest import Inbound, Kind, Prepared, prepare
from collector.ledger import SeqLedger
from collector.metrics import Metrics
from collector.points import Point, Storable
from collector.registry import Registry
from collector.risk import RiskBoard
from collector.sinks.base import SinkError
from collector.sinks.config import SinkConfig
from collector.sinks.influx import InfluxSink
from collector.sinks.sqlite import SqliteSink
from collector.writer import Writer
from protocols.wire import (
    Bus,
    CommandAck,
    Event,
    EventType,
    GatewayState,
    Health,
    LinkState,
    Measurement,
    Quantity,
    Record,
    Source,
    Status,
    decode_command,
    decode_stored,
    encode_ack,
    encode_batches,
    encode_health,
    encode_status,
)

from .conftest import stored_records, wait_until

NOW = 1_718_000_000_000
EPOCH = 0x0123456789ABCDEF
WLOG = "firegate.collector.writer"


# -- records and items -------------------------------------------------------------------------


def reading(seq: int, source: str = "modbus/bus1/3/pressure") -> Measurement:
    return Measurement(source=Source(source, Bus.MODBUS), quantity=Quantity.PRESSURE, value=0.3,
                       receive_ms=NOW + seq, unit="MPa", seq=seq)


def fire(seq: int, source: str = "panel/1-1/42-0x00000102") -> Event:
    return Event(source=Source(source, Bus.GB26875), type=EventType.FIRE_ALARM,
                 receive_ms=NOW + seq, seq=seq)


def inbound(gw: str, channel: str, payload: bytes) -> Inbound:
    return Inbound(f"firegate/v1/{gw}/{channel}", payload, 1, 1, False, 1, NOW,
                   time.perf_counter_ns())


def batch(gw: str, records: Sequence[Record], *, epoch: int = EPOCH,
          site: str | None = None) -> Prepared:
    (payload,) = encode_batches(gw, site, NOW, list(records), epoch=epoch)
    item = prepare(inbound(gw, "records", payload))
    assert item.kind is Kind.BATCH and item.batch is not None
    return item


def seqs(gw: str, *numbers: int, epoch: int = EPOCH, site: str | None = None) -> Prepared:
    return batch(gw, [reading(s) for s in numbers], epoch=epoch, site=site)


def status(gw: str, site: str | None = None) -> Prepared:
    item = prepare(inbound(gw, "status", encode_status(
        Status(gw, GatewayState.ONLINE, NOW, site=site))))
    assert item.kind is Kind.STATUS
    return item


def health(gw: str, *, epoch: int = 0, counters: int = 0, links: int = 0) -> Prepared:
    h = Health(gateway_id=gw, ts_ms=NOW, uptime_s=5.0, version="1.0", outbox_depth=0,
               counters={f"drv-{i}": {"r": 1} for i in range(counters)},
               links={f"l{i}": LinkState.UP for i in range(links)}, epoch=epoch)
    item = prepare(inbound(gw, "health", encode_health(h)))
    assert item.kind is Kind.HEALTH
    return item


def with_bad_record(gw: str, good: int, bad: int) -> Prepared:
    """A batch whose record ``bad`` does not decode (a unit that is not a string)."""
    (payload,) = encode_batches(gw, None, NOW, [reading(good), reading(bad)], epoch=EPOCH)
    head, _, tail = payload.rpartition(b'"MPa"')
    item = prepare(inbound(gw, "records", head + b"7" + tail))
    assert item.kind is Kind.BATCH and [f.seq for f in item.faults] == [bad]
    return item


# -- the stand-ins -----------------------------------------------------------------------------


class FaultySink(SqliteSink):
    """Stand-in for the database's failures: the real embedded store behind a failure
    injector. ``faults`` are raised by the next writes, one each; ``refuse(points)`` may
    raise for any write (a permanent refusal of some point). Every write asked for is noted
    in ``attempts``, every write that stored in ``writes``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, retention_days=0)
        self.faults: list[SinkError] = []
        self.refuse: Callable[[Sequence[Storable]], SinkError | None] = lambda _: None
        self.attempts: list[list[Storable]] = []
        self.writes: list[list[Storable]] = []
        self.before_write: Callable[[], None] = lambda: None

    def write(self, points: Sequence[Storable]) -> None:
        self.attempts.append(list(points))
        self.before_write()
        if self.faults:
            raise self.faults.pop(0)
        if (error := self.refuse(points)) is not None:
            raise error
        super().write(points)
        self.writes.append(list(points))


def measurements(points: Sequence[Storable]) -> list[str]:
    return [p.measurement for p in points if isinstance(p, Point)]


def records_in(points: Sequence[Storable]) -> Counter[tuple[str | None, int]]:
    return Counter((p.tag("gateway"), int(str(p.field("seq")))) for p in points
                   if isinstance(p, Point) and p.measurement in ("fg_value", "fg_event"))


class Clock(threading.Event):
    """Stand-in for time: the writer's stop event. ``wait`` notes the back-off asked for and
    returns at once; ``during_wait`` runs first (it may heal the sink, or set the event)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.during_wait: Callable[[], None] = lambda: None

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        self.during_wait()
        return self.is_set()


class Broker:
    """Stand-in for the broker: the PUBACKs (``ack``, ``is_current``) and the publishes of
    the confirmer and the resend desk, in one ordered list ``events``. At each ack it notes
    what the store holds and which of the acknowledged records the ledger has not
    committed."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.events: list[tuple[str, str]] = []
        self.acked: list[list[Inbound]] = []
        self.stored_at_ack: list[dict[str, Counter[int]]] = []
        self.uncommitted_at_ack: list[list[tuple[str, int, int]]] = []
        self.current: Callable[[Inbound], bool] = lambda _: True
        self.asked: list[Inbound] = []
        self.published: list[tuple[str, bytes]] = []

    def ack(self, items: Sequence[Inbound]) -> int:
        self.events.append(("ack", ",".join(i.topic for i in items)))
        self.acked.append(list(items))
        self.stored_at_ack.append(stored_records(self.rig.sink.path))
        self.uncommitted_at_ack.append(self.rig.uncommitted(items))
        return len(items)

    def is_current(self, item: Inbound) -> bool:
        self.asked.append(item)
        return self.current(item)

    def publish(self, topic: str, payload: bytes) -> bool:
        self.events.append(("publish", topic))
        self.published.append((topic, payload))
        return True


class Rig:
    """A writer over its real parts, wired as :mod:`collector.app` does."""

    def __init__(self, tmp: Path, *, gateways: GatewaySites | None = None, desk: bool = False,
                 own_stop: bool = False, **pipe: float) -> None:
        settings: dict[str, float] = {"retry_min_s": 0.5, "retry_max_s": 8.0,
                                      "group_wait_ms": 0.0, **pipe}
        self.cfg = PipelineConfig(**settings)  # type: ignore[arg-type]
        self.now = NOW
        self.sink = FaultySink(tmp / "store.sqlite")
        self.ledger = SeqLedger(tmp / "ledger.sqlite")
        self.deadletters = DeadLetters(tmp / "deadletters.sqlite")
        self.registry = Registry(tmp / "registry.sqlite")
        self.risk = RiskBoard(RiskRules(), self.registry.conditions())
        self.metrics = Metrics()
        self.ticks = 0
        self.effects = Effects(registry=self.registry, risk=self.risk, notifier=None,
                               ledger=self.ledger, metrics=self.metrics, config=self.cfg,
                               connected_for=self.connected_for, collector_id="coll-w")
        self.broker = Broker(self)
        self.prepared: queue.Queue[Prepared] = queue.Queue()
        self.desk = ResendDesk(self.broker.publish, self.ledger, self.metrics, after_s=0,
                               every_s=0) if desk else None
        self.writer = Writer(config=self.cfg, collector_id="coll-w", prepared=self.prepared,
                             sink=self.sink, ledger=self.ledger, deadletters=self.deadletters,
                             effects=self.effects, metrics=self.metrics, acker=self.broker,
                             clock=lambda: self.now, gateways=gateways,
                             confirmer=Confirmer(self.broker.publish, "coll-w", self.metrics),
                             desk=self.desk)
        self.clock = Clock()
        if not own_stop:  # the loop's tests keep the writer's own event
            self.writer.stop = self.clock

    def connected_for(self) -> float | None:
        """The MQTT session's side of the periodic work (asked once a tick): never
        connected. Counts the ticks."""
        self.ticks += 1
        return None

    def uncommitted(self, items: Sequence[Inbound]) -> list[tuple[str, int, int]]:
        out = []
        for i in items:
            item = prepare(i)
            if item.kind is Kind.BATCH and item.gateway_id is not None:
                numbers = [r.seq for r in item.batch.records] if item.batch else []
                numbers += [f.seq for f in item.faults if f.seq is not None]
                for s, new in zip(numbers, self.ledger.fresh(item.gateway_id, numbers,
                                                             item.epoch), strict=True):
                    if new:
                        out.append((item.gateway_id, item.epoch, s))
        return out

    def stored(self) -> dict[str, Counter[int]]:
        return stored_records(self.sink.path)

    def fresh(self, gw: str, *numbers: int, epoch: int = EPOCH) -> list[bool]:
        return self.ledger.fresh(gw, list(numbers), epoch)

    def close(self) -> None:
        self.sink.close()
        self.ledger.close()
        self.deadletters.close()
        self.registry.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def build(**kw: object) -> Rig:
        home = tmp_path / f"rig{len(made)}"
        home.mkdir()
        r = Rig(home, **kw)  # type: ignore[arg-type]
        made.append(r)
        return r

    try:
        yield build
    finally:
        for r in made:
            r.close()


def topics(items: Sequence[Prepared]) -> list[str]:
    return [i.inbound.topic for i in items]


# -- the order: stored, committed, confirmed, acknowledged -----------------------------------


def test_a_group_is_stored_committed_confirmed_then_acknowledged_once_in_order(
        rig: Rig) -> None:
    assert rig.writer.sink_error is None and rig.writer.sink_down_since_ms is None
    group = [seqs("gw-a", 1, 2), seqs("gw-b", 1, epoch=0), status("gw-c"), seqs("gw-a", 5)]
    rig.now = NOW + 123
    t0 = time.perf_counter()
    assert rig.writer.handle(group) is True
    elapsed = time.perf_counter() - t0
    assert len(rig.sink.writes) == 1  # one write for the group
    assert rig.metrics.write_seconds.count == 1
    assert 0 < rig.metrics.write_seconds._sum <= elapsed
    assert {decode_stored(p).ts_ms for _, p in rig.broker.published} == {NOW + 123}
    # Committed at the group's time: the gap 3..4 is as old as the group.
    assert [(g.first, g.last, g.since_ms) for g in rig.ledger.gaps("gw-a")] == [
        (3, 4, NOW + 123)]
    assert [e for e, _ in rig.broker.events] == ["publish", "publish", "ack"]
    assert {t for e, t in rig.broker.events if e == "publish"} == {
        "firegate/v1/gw-a/stored", "firegate/v1/gw-b/stored"}
    assert [[i.topic for i in a] for a in rig.broker.acked] == [topics(group)]
    assert rig.broker.stored_at_ack == [{"gw-a": Counter({1: 1, 2: 1, 5: 1}),
                                         "gw-b": Counter({1: 1})}]
    assert rig.broker.uncommitted_at_ack == [[]]
    assert rig.fresh("gw-a", 1, 2, 3, 5) == [False, False, True, False]
    assert rig.fresh("gw-b", 1, epoch=0) == [False]
    assert rig.metrics.records_stored.value() == 4
    assert rig.metrics.duplicates.value() == 0
    assert rig.metrics.latency_seconds.count == 0
    # A status commits nothing: the gateway's first batch opens its epoch, no reset.
    assert rig.writer.handle([seqs("gw-c", 1)])
    assert rig.metrics.gateway_resets.value() == 0


def test_the_default_clock_is_the_wall_clock_in_ms(rig: Rig) -> None:
    w = Writer(config=rig.cfg, collector_id="c", prepared=rig.prepared, sink=rig.sink,
               ledger=rig.ledger, deadletters=rig.deadletters, effects=rig.effects,
               metrics=rig.metrics, acker=rig.broker)
    before = time.time_ns() // 1_000_000
    now = w.clock()
    assert before <= now <= time.time_ns() // 1_000_000
    assert w.gateways == GatewaySites() and w.confirmer is None and w.desk is None
    assert not w.stop.is_set()


def test_urgent_items_have_their_latency_observed(rig: Rig) -> None:
    t0 = time.perf_counter_ns()
    group = [batch("gw-f", [fire(1)]), seqs("gw-a", 1), batch("gw-g", [fire(4)])]
    assert rig.writer.handle(group)
    elapsed = (time.perf_counter_ns() - t0) / 1e9
    assert rig.metrics.latency_seconds.count == 2
    assert 0 < rig.metrics.latency_seconds._sum <= 2 * elapsed


def test_nothing_is_acknowledged_while_the_store_is_down(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    long = "disk I/O error " + "x" * 400
    rig.sink.faults = [SinkError(long), SinkError("still down")]
    seen: list[tuple[int, int | None, str | None, list[bool], dict[str, Counter[int]]]] = []

    def look() -> None:
        seen.append((len(rig.broker.acked), rig.writer.sink_down_since_ms,
                     rig.writer.sink_error, rig.fresh("gw-a", 1, 2), rig.stored()))
        rig.now += 1_000

    rig.clock.during_wait = look
    with caplog.at_level(logging.INFO, logger=WLOG):
        assert rig.writer.handle([seqs("gw-a", 1), seqs("gw-a", 2)])
    assert seen == [(0, NOW, long[:300], [True, True], {}),
                    (0, NOW, "still down", [True, True], {})]
    assert rig.broker.uncommitted_at_ack == [[]]
    assert rig.broker.stored_at_ack == [{"gw-a": Counter({1: 1, 2: 1})}]
    assert rig.metrics.sink_errors.values() == {("transient",): 2}
    assert rig.writer.sink_error is None and rig.writer.sink_down_since_ms is None
    assert rig.metrics.write_seconds.count == 1
    assert caplog.messages == [
        f"sink sqlite write failed (transient): {long}; holding acknowledgements, retrying",
        "sink sqlite writes again (after: still down)"]


def test_back_off_doubles_up_to_retry_max_with_jitter_and_honours_retry_after(
        make: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.0)  # the jitter's low end: half
    r = make(retry_min_s=1.0, retry_max_s=10.0)
    r.sink.faults = [SinkError("a"), SinkError("b"), SinkError("c", retry_after_s=7.0),
                     SinkError("d", retry_after_s=0.1), SinkError("e"),
                     SinkError("f", retry_after_s=60.0), SinkError("g")]
    assert r.writer.handle([seqs("gw-a", 1)])
    assert r.clock.waits == [0.5, 1.0, 7.0, 4.0, 5.0, 10.0, 5.0]
    monkeypatch.setattr(random, "random", lambda: 1.0)  # the high end: all of it
    r2 = make(retry_min_s=1.0, retry_max_s=10.0)
    r2.sink.faults = [SinkError("a"), SinkError("b"), SinkError("c"), SinkError("d"),
                      SinkError("e")]
    assert r2.writer.handle([seqs("gw-a", 1)])
    assert r2.clock.waits == [1.0, 2.0, 4.0, 8.0, 10.0]


def test_the_back_off_exponent_stops_growing_after_twenty_attempts(
        make: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "random", lambda: 1.0)
    r = make(retry_min_s=1e-9, retry_max_s=1e9)
    r.sink.faults = [SinkError(str(i)) for i in range(23)]
    assert r.writer.handle([seqs("gw-a", 1)])
    assert r.clock.waits[:3] == [1e-9, 2e-9, 4e-9]
    assert r.clock.waits[20:] == [pytest.approx(2**20 * 1e-9)] * 3  # exponent capped at 20


def test_a_group_nobody_can_acknowledge_is_given_up_unstored_and_unconfirmed(
        rig: Rig) -> None:
    rig.broker.current = lambda _: False
    rig.sink.faults = [SinkError("down")]
    group = [batch("gw-f", [fire(1)], site="site-f"), seqs("gw-a", 1)]
    assert rig.writer.handle(group) is False
    assert rig.broker.events == [] and rig.broker.acked == []
    assert {i.topic for i in rig.broker.asked} == set(topics(group))
    assert rig.fresh("gw-f", 1) == [True] and rig.fresh("gw-a", 1) == [True]
    assert rig.metrics.records_stored.value() == 0
    # The effects were applied (the site is red): their points wait for the next write.
    assert "fg_risk" in measurements(rig.effects.pending)
    assert len(rig.sink.attempts) == 1


def test_a_group_is_kept_while_any_of_it_can_be_acknowledged(rig: Rig) -> None:
    group = [seqs("gw-a", 1), seqs("gw-b", 1)]
    rig.broker.current = lambda i: i is group[1].inbound
    rig.sink.faults = [SinkError("down")]
    assert rig.writer.handle(group) is True
    assert len(rig.broker.acked) == 1
    assert rig.broker.uncommitted_at_ack == [[]]


def test_stopping_during_an_outage_gives_the_group_up(rig: Rig) -> None:
    rig.sink.faults = [SinkError("down")]
    rig.clock.during_wait = rig.clock.set
    assert rig.writer.handle([seqs("gw-a", 1)]) is False
    assert rig.broker.acked == [] and rig.fresh("gw-a", 1) == [True]
    assert rig.broker.asked == []  # stopping: no one asked whether it could still be acked


def test_given_up_effects_points_go_with_the_next_group(rig: Rig) -> None:
    rig.broker.current = lambda _: False
    rig.sink.faults = [SinkError("down")]
    assert not rig.writer.handle([batch("gw-f", [fire(1)], site="site-f")])
    rig.broker.current = lambda _: True
    assert rig.writer.handle([seqs("gw-a", 1)])
    assert "fg_risk" in measurements(rig.sink.writes[0])
    assert rig.effects.pending == []


# -- duplicates -------------------------------------------------------------------------------


def test_duplicates_are_dropped_and_counted_within_and_across_groups(rig: Rig) -> None:
    assert rig.writer.handle([seqs("gw-a", 1, 2, 3)])
    group = [seqs("gw-a", 3, 4),  # 3 stored before
             seqs("gw-a", 4, 5),  # 4 earlier in this group
             seqs("gw-a", 4, epoch=9),  # another epoch: new
             seqs("gw-b", 4),  # another gateway: new
             seqs("gw-a", 3),  # nothing new
             seqs("gw-a", 6, 7),  # all new
             seqs("gw-a", 2, 9)]  # 2 stored before, 9 new
    assert rig.writer.handle(group)
    assert records_in(rig.sink.writes[1]) == Counter({
        ("gw-a", 4): 2, ("gw-a", 5): 1, ("gw-b", 4): 1, ("gw-a", 6): 1, ("gw-a", 7): 1,
        ("gw-a", 9): 1})
    assert rig.metrics.duplicates.value() == 4
    assert rig.metrics.records_stored.value() == 3 + 7
    assert [[i.topic for i in a] for a in rig.broker.acked][1] == topics(group)
    assert rig.fresh("gw-a", 4, 5, 6, 7) == [False] * 4
    assert rig.fresh("gw-a", 4, epoch=9) == [False]


def test_a_group_of_duplicates_only_is_acknowledged_and_writes_nothing(rig: Rig) -> None:
    assert rig.writer.handle([seqs("gw-a", 1, 2)])
    assert rig.writer.handle([seqs("gw-a", 1, 2)])
    assert len(rig.broker.acked) == 2
    assert rig.metrics.duplicates.value() == 2
    assert all(records_in(w) == Counter() for w in rig.sink.attempts[1:])


# -- dead letters -------------------------------------------------------------------------------


def test_a_refused_message_is_dead_lettered_and_acknowledged(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    (other,) = encode_batches("gw-b", None, NOW, [reading(1)])
    bad = prepare(inbound("gw-a", "records", other))  # another gateway's batch
    assert bad.kind is Kind.REJECT and bad.error is not None
    pathless = prepare(inbound("gw-a", "records", b"not json"))
    assert pathless.kind is Kind.REJECT and pathless.error is not None
    assert not pathless.error.path
    rig.now = NOW + 77
    with caplog.at_level(logging.WARNING, logger=WLOG):
        assert rig.writer.handle([bad, pathless, seqs("gw-a", 1)])
    letters = rig.deadletters.recent(5)
    assert [(d.topic, d.reason, d.path, d.payload, d.at_ms) for d in letters] == [
        ("firegate/v1/gw-a/records", pathless.error.reason.value, None, b"not json",
         NOW + 77),
        ("firegate/v1/gw-a/records", bad.error.reason.value, bad.error.path,
         bad.inbound.payload, NOW + 77)]
    assert rig.metrics.dead_letters.value(bad.error.reason.value) == 1
    assert sum(rig.metrics.dead_letters.values().values()) == 2
    assert rig.broker.acked[0][:2] == [bad.inbound, pathless.inbound]
    assert caplog.messages == [
        f"dead letter {bad.error.reason.value} on firegate/v1/gw-a/records at "
        f"{bad.error.path}",
        f"dead letter {pathless.error.reason.value} on firegate/v1/gw-a/records"]


def test_a_long_topic_is_logged_cut_to_a_hundred_characters(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    topic = "firegate/v1/" + "g" * 200 + "/records"  # any topic the broker passes on
    item = prepare(Inbound(topic, b"{}", 1, 1, False, 1, NOW, 0))
    assert item.kind is Kind.REJECT and item.error is not None
    with caplog.at_level(logging.WARNING, logger=WLOG):
        assert rig.writer.handle([item])
    assert caplog.messages == [
        f"dead letter {item.error.reason.value} on {topic[:100]} at {item.error.path}"]
    (letter,) = rig.deadletters.recent(1)
    assert letter.topic == topic


def test_a_bad_record_is_dead_lettered_alone_and_its_seq_committed(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    item = with_bad_record("gw-a", 7, 8)
    (fault,) = item.faults
    rig.now = NOW + 99
    with caplog.at_level(logging.WARNING, logger=WLOG):
        assert rig.writer.handle([item])
    assert rig.broker.stored_at_ack == [{"gw-a": Counter({7: 1})}]
    assert rig.broker.uncommitted_at_ack == [[]]
    assert rig.fresh("gw-a", 7, 8) == [False, False]
    (letter,) = rig.deadletters.recent(5)
    reason = fault.error.reason.value
    assert (letter.topic, letter.reason, letter.path, letter.payload, letter.at_ms) == (
        "firegate/v1/gw-a/records", reason, fault.error.path, fault.raw, NOW + 99)
    assert rig.metrics.dead_letters.value(reason) == 1
    assert rig.metrics.records_dead_lettered.value() == 1
    assert rig.metrics.records_stored.value() == 1  # the dead letter is not counted stored
    assert caplog.messages == [f"dead letter {reason} on firegate/v1/gw-a/records at "
                               f"{fault.error.path} (the rest of its batch is stored)"]
    # Accounted for: the same seq again is a duplicate.
    assert rig.writer.handle([seqs("gw-a", 8)])
    assert rig.metrics.duplicates.value() == 1


def test_a_batch_of_only_bad_records_is_committed_and_acknowledged(rig: Rig) -> None:
    good = with_bad_record("gw-a", 7, 8)
    (payload,) = encode_batches("gw-a", None, NOW, [reading(9)], epoch=EPOCH)
    head, _, tail = payload.rpartition(b'"MPa"')
    allbad = prepare(inbound("gw-a", "records", head + b"7" + tail))
    assert allbad.batch is None and [f.seq for f in allbad.faults] == [9]
    assert rig.writer.handle([allbad, good])
    assert rig.fresh("gw-a", 7, 8, 9) == [False, False, False]
    assert rig.metrics.records_dead_lettered.value() == 2
    assert len(rig.deadletters) == 2
    assert rig.broker.acked == [[allbad.inbound, good.inbound]]


# -- sites ------------------------------------------------------------------------------------


def test_refuse_takes_only_listed_gateways_and_only_for_their_site(make: Callable[..., Rig]
                                                                  ) -> None:
    r = make(gateways=GatewaySites(sites={"gw-a": "site-a"}, unknown="refuse"))
    group = [seqs("gw-a", 1, site="site-a"), seqs("gw-x", 1), status("gw-x"), health("gw-x"),
             seqs("gw-a", 2, site="site-b"), status("gw-a", "site-b"), seqs("gw-a", 3),
             status("gw-a")]
    assert r.writer.handle(group)
    assert [(d.topic, d.reason, d.path) for d in reversed(r.deadletters.recent(10))] == [
        ("firegate/v1/gw-x/records", "unknown_gateway", "gw"),
        ("firegate/v1/gw-x/status", "unknown_gateway", "gw"),
        ("firegate/v1/gw-x/health", "unknown_gateway", "gw"),
        ("firegate/v1/gw-a/records", "site_mismatch", "site"),
        ("firegate/v1/gw-a/status", "site_mismatch", "site")]
    assert r.metrics.site_mismatch.value() == 2
    assert r.stored() == {"gw-a": Counter({1: 1, 3: 1})}
    assert r.fresh("gw-x", 1) == [True]
    assert r.broker.acked == [[i.inbound for i in group]]


def test_bind_first_binds_a_gateway_to_the_first_site_it_names(make: Callable[..., Rig]
                                                               ) -> None:
    r = make(gateways=GatewaySites(sites={"gw-l": "site-l"}))
    assert r.writer.handle([seqs("gw-a", 1), status("gw-a", "site-a"),
                            seqs("gw-a", 2, site="site-b"),  # named earlier in the group
                            seqs("gw-b", 1, site="site-b"), seqs("gw-l", 1, site="site-x"),
                            seqs("gw-c", 1, site="site-c"), status("gw-c", "site-d")])
    assert [(d.topic, d.reason) for d in reversed(r.deadletters.recent(10))] == [
        ("firegate/v1/gw-a/records", "site_mismatch"),
        ("firegate/v1/gw-l/records", "site_mismatch"),
        ("firegate/v1/gw-c/status", "site_mismatch")]
    # In a later group the registry remembers the binding.
    assert r.writer.handle([seqs("gw-b", 2, site="site-c"), seqs("gw-b", 3, site="site-b"),
                            seqs("gw-a", 3, site="site-a")])
    assert r.metrics.site_mismatch.value() == 4
    assert r.stored() == {"gw-a": Counter({1: 1, 3: 1}), "gw-b": Counter({1: 1, 3: 1}),
                          "gw-c": Counter({1: 1})}


def test_open_takes_any_site_and_answers_are_never_refused(make: Callable[..., Rig]) -> None:
    r = make(gateways=GatewaySites(sites={"gw-a": "site-a"}, unknown="open"))
    assert r.writer.handle([seqs("gw-a", 1, site="site-z"), seqs("gw-x", 1, site="site-x")])
    assert len(r.deadletters) == 0 and r.metrics.site_mismatch.value() == 0
    assert r.stored() == {"gw-a": Counter({1: 1}), "gw-x": Counter({1: 1})}
    refusing = make(gateways=GatewaySites(unknown="refuse"))
    answer = prepare(inbound("gw-x", "cmd/ack", encode_ack(CommandAck("c-1", True, NOW))))
    assert answer.kind is Kind.ACK
    assert refusing.writer.handle([answer])
    assert len(refusing.deadletters) == 0
    assert refusing.broker.acked == [[answer.inbound]]


# -- epochs -----------------------------------------------------------------------------------


def test_a_new_epoch_is_counted_and_stored_as_a_reset_with_the_old_final_state(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    assert rig.writer.handle([seqs("gw-a", 1, 2, 5, epoch=0x11, site="site-a")])
    rig.now = NOW + 500
    with caplog.at_level(logging.WARNING, logger=WLOG):
        assert rig.writer.handle([status("gw-a"), seqs("gw-a", 1, 2, epoch=0x22)])
    assert rig.metrics.gateway_resets.value() == 1
    assert rig.metrics.duplicates.value() == 0  # seq 1 of the new epoch is new
    (reset,) = [p for p in rig.sink.writes[1] if isinstance(p, Point)
                and p.measurement == "fg_reset"]
    assert (reset.tag("gateway"), reset.tag("site")) == ("gw-a", "site-a")
    assert (reset.field("old_epoch"), reset.field("new_epoch"), reset.field("old_highest"),
            reset.field("old_missing")) == (f"{0x11:016x}", f"{0x22:016x}", 5, 2)
    assert reset.time_ns == (NOW + 500) * 1_000_000
    assert rig.fresh("gw-a", 1, 2, 3, epoch=0x22) == [False, False, True]
    assert caplog.messages == [
        "gateway gw-a began a new epoch 0000000000000022 (its store is new): the old epoch "
        "0000000000000011 ended at seq 5 with 2 records never stored"]
    # A health message in a new epoch is one too; a status never is.
    assert rig.writer.handle([status("gw-a", "site-a"), health("gw-a", epoch=0x33)])
    assert rig.metrics.gateway_resets.value() == 2


def test_a_reset_names_the_site_given_earlier_in_its_group(rig: Rig) -> None:
    assert rig.writer.handle([seqs("gw-a", 1, epoch=0x11)])  # no site known
    assert rig.writer.handle([status("gw-a", "site-s"), seqs("gw-a", 1, epoch=0x22)])
    (reset,) = [p for p in rig.sink.writes[1] if isinstance(p, Point)
                and p.measurement == "fg_reset"]
    assert reset.tag("site") == "site-s"


# -- the source cap ---------------------------------------------------------------------------

S4 = "s4-" + "x" * 125  # the longest source id (SOURCE_ID_MAX): logged cut to 100 characters


def test_sources_past_the_cap_are_cut_committed_and_fire_alarms_kept(
        make: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    r = make(max_sources_per_gateway=2)
    at_cap = batch("gw-a", [reading(1, "s1"), reading(2, "s2"), reading(3, "s1")])
    over = batch("gw-a", [fire(4, "f3"), reading(5, S4), reading(6, "s1"), reading(7, S4),
                          fire(8, "s5")])
    with caplog.at_level(logging.WARNING, logger=WLOG):
        assert r.writer.handle([at_cap])
        assert r.metrics.records_cut.values() == {}
        assert r.writer.handle([over])
    assert r.stored() == {"gw-a": Counter({1: 1, 2: 1, 3: 1, 4: 1, 6: 1, 8: 1})}
    assert r.metrics.records_cut.values() == {("sources_per_gateway",): 2}
    assert r.broker.uncommitted_at_ack[1] == []
    assert r.fresh("gw-a", 5, 7) == [False, False]  # accounted for
    assert r.metrics.records_stored.value() == 3 + 3
    assert caplog.messages == [
        "gateway gw-a sends from more than 2 sources (max_sources_per_gateway): 2 records "
        f"from new sources not stored (e.g. {S4[:100]!r}; counted in records_cut_total, "
        "fire alarms always stored)"]
    # The fire alarm's source was not taken: its readings are cut too; logged once a while.
    assert r.writer.handle([batch("gw-a", [reading(9, "f3"), reading(10, "s2")])])
    assert r.stored()["gw-a"][10] == 1 and 9 not in r.stored()["gw-a"]
    assert r.metrics.records_cut.value("sources_per_gateway") == 3
    assert len(caplog.messages) == 1
    # Another gateway has its own sources.
    assert r.writer.handle([batch("gw-b", [reading(1, S4), reading(2, "f3")])])
    assert r.stored()["gw-b"] == Counter({1: 1, 2: 1})
    # Redelivered, the cut record is a duplicate.
    assert r.writer.handle([batch("gw-a", [reading(5, S4)])])
    assert r.metrics.duplicates.value() == 1
    assert r.metrics.records_cut.value("sources_per_gateway") == 3


def test_the_first_sources_seen_are_the_ones_taken(make: Callable[..., Rig]) -> None:
    r = make(max_sources_per_gateway=3)
    assert r.writer.handle([batch("gw-a", [reading(1, "s1"), reading(2, "s2")])])
    assert r.writer.handle([batch("gw-a", [reading(3, "s4"), reading(4, "s5"),
                                           reading(5, "s4")])])
    assert r.stored()["gw-a"] == Counter({1: 1, 2: 1, 3: 1, 5: 1})
    assert r.metrics.records_cut.value("sources_per_gateway") == 1
    assert r.writer.handle([batch("gw-a", [reading(6, "s5"), reading(7, "s1")])])
    assert r.metrics.records_cut.value("sources_per_gateway") == 2


def test_only_new_fire_sources_past_the_cap_cut_nothing(make: Callable[..., Rig]) -> None:
    r = make(max_sources_per_gateway=1)
    assert r.writer.handle([batch("gw-a", [reading(1, "s1")])])
    assert r.writer.handle([batch("gw-a", [fire(2, "f1"), fire(3, "f2")])])
    assert r.metrics.records_cut.values() == {}
    assert r.stored()["gw-a"] == Counter({1: 1, 2: 1, 3: 1})


def test_a_cut_is_logged_again_after_five_minutes(
        make: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    r = make(max_sources_per_gateway=0)
    with caplog.at_level(logging.WARNING, logger=WLOG):
        assert r.writer.handle([batch("gw-a", [reading(1, "s1")])])
        r.writer._cut_logged["gw-a"] -= 299.0  # its last log, 299 s ago
        assert r.writer.handle([batch("gw-a", [reading(2, "s1")])])
        assert len(caplog.messages) == 1
        r.writer._cut_logged["gw-a"] -= 1.5  # now 300.5 s ago
        assert r.writer.handle([batch("gw-a", [reading(3, "s1")])])
        assert len(caplog.messages) == 2
        assert r.writer.handle([batch("gw-b", [reading(1, "s1")])])  # per gateway
        assert len(caplog.messages) == 3


# -- health and status ----------------------------------------------------------------------


def test_health_is_stored_with_its_site_and_its_cut_entries_counted(
        make: Callable[..., Rig]) -> None:
    r = make(max_health_counters=1, max_health_links=2)
    assert r.writer.handle([status("gw-r", "site-r")])  # in the registry from now on
    assert r.writer.handle([status("gw-a", "site-a"), health("gw-a", counters=4, links=3),
                            health("gw-r", counters=1, links=0), health("gw-n")])
    points = [p for p in r.sink.writes[1] if isinstance(p, Point)]
    sites = {p.tag("gateway"): p.tag("site") for p in points if p.measurement == "fg_health"}
    assert sites == {"gw-a": "site-a", "gw-r": "site-r", "gw-n": None}
    assert measurements(points).count("fg_counter") == 2
    assert measurements(points).count("fg_link") == 2
    assert r.metrics.health_entries_cut.values() == {("counters",): 3, ("links",): 1}
    assert measurements(points).count("fg_gateway") == 1  # the status's point


def test_a_last_will_is_stored_at_its_receipt(rig: Rig) -> None:
    will = Status("gw-w", GatewayState.OFFLINE, NOW, reason="lwt")
    item = prepare(Inbound("firegate/v1/gw-w/status", encode_status(will), 1, 1, False, 1,
                           NOW + 4_000, 0))
    assert rig.writer.handle([item])
    (point,) = [p for p in rig.sink.writes[0] if isinstance(p, Point)
                and p.measurement == "fg_gateway"]
    assert point.time_ns == (NOW + 4_000) * 1_000_000 + 1  # an offline point: + 1 ns


# -- the store refuses for good -------------------------------------------------------------


def poison(points: Sequence[Storable]) -> SinkError | None:
    if any(isinstance(p, Point) and p.tag("source") == "poison/1" for p in points):
        return SinkError("HTTP 400: field type conflict " + "y" * 300, permanent=True,
                         status=400)
    return None


@pytest.mark.parametrize("status", [400, 422, None])
def test_a_message_the_store_refuses_is_dead_lettered_alone_and_not_committed(
        rig: Rig, status: int | None) -> None:
    def refuse(points: Sequence[Storable]) -> SinkError | None:
        e = poison(points)
        return None if e is None else SinkError(str(e), permanent=True, status=status)

    rig.sink.refuse = refuse
    bad = batch("gw-b", [reading(1, "poison/1")])
    group = [seqs("gw-a", 1), bad, seqs("gw-c", 1)]
    assert rig.writer.handle(group)
    (letter,) = rig.deadletters.recent(5)
    assert (letter.topic, letter.reason, letter.payload) == (
        "firegate/v1/gw-b/records", "sink_refused", bad.inbound.payload)
    assert letter.path == ("sink: HTTP 400: field type conflict " + "y" * 300)[:200]
    assert rig.metrics.dead_letters.value("sink_refused") == 1
    assert rig.metrics.sink_errors.values() == {("refused",): 1}
    assert rig.broker.stored_at_ack == [{"gw-a": Counter({1: 1}), "gw-c": Counter({1: 1})}]
    assert rig.broker.uncommitted_at_ack == [[("gw-b", EPOCH, 1)]]  # refused: not committed
    assert rig.broker.acked == [[i.inbound for i in group]]
    assert rig.metrics.records_stored.value() == 2
    assert rig.clock.waits == []
    (canary,) = rig.sink.writes[0]  # the canary, a known-good point, stored
    assert isinstance(canary, Point)
    assert (canary.measurement, canary.tags, canary.fields) == (
        "fg_collector", (("collector", "coll-w"),), (("alive", True),))


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_configuration_refusal_is_an_outage_never_a_dead_letter(
        rig: Rig, status: int) -> None:
    rig.sink.faults = [SinkError("HTTP auth", permanent=True, status=status)] * 2
    assert rig.writer.handle([seqs("gw-a", 1)])
    assert len(rig.deadletters) == 0
    assert rig.metrics.sink_errors.values() == {("config",): 2}
    assert len(rig.clock.waits) == 2
    assert all("fg_collector" not in measurements(a) for a in rig.sink.attempts)  # no canary
    assert rig.broker.stored_at_ack == [{"gw-a": Counter({1: 1})}]


def test_a_store_that_refuses_even_the_canary_is_down_not_refusing_a_message(
        rig: Rig) -> None:
    rig.sink.faults = [SinkError("HTTP 400", permanent=True, status=400)] * 4
    assert rig.writer.handle([seqs("gw-a", 1)])
    # write, canary; write, canary; then the write works
    assert [measurements(a)[:1] for a in rig.sink.attempts] == [
        ["fg_value"], ["fg_collector"], ["fg_value"], ["fg_collector"], ["fg_value"]]
    assert len(rig.deadletters) == 0
    assert rig.metrics.sink_errors.values() == {("refused",): 2}
    assert rig.broker.stored_at_ack == [{"gw-a": Counter({1: 1})}]


def test_the_collectors_own_points_refused_for_good_are_dropped_not_the_group(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    def refuse(points: Sequence[Storable]) -> SinkError | None:
        if "fg_risk" in measurements(points):
            return SinkError("HTTP 400: risk", permanent=True, status=400)
        return None

    rig.sink.refuse = refuse
    group = [batch("gw-f", [fire(1)], site="site-f")]
    with caplog.at_level(logging.ERROR, logger=WLOG):
        assert rig.writer.handle(group)
    assert len(rig.deadletters) == 0
    assert rig.broker.stored_at_ack == [{"gw-f": Counter({1: 1})}]
    assert rig.broker.uncommitted_at_ack == [[]]
    assert rig.metrics.sink_errors.values() == {("refused",): 1}
    assert rig.effects.pending == []
    n = len([p for p in rig.sink.attempts[0] if isinstance(p, Point)
             and p.measurement not in ("fg_event", "fg_value")])
    assert caplog.messages[-1] == (f"sink sqlite refused {n} of the collector's own points "
                                   "(HTTP 400: risk): dropped")


def test_narrowing_down_waits_through_an_outage_and_gives_up_with_the_item(
        rig: Rig) -> None:
    rig.sink.refuse = poison
    bad = batch("gw-b", [reading(1, "poison/1")])
    good = seqs("gw-a", 1)
    # The whole write is refused, the canary taken, then the first part meets an outage.
    calls = [0]

    def outage_once() -> None:
        calls[0] += 1
        if calls[0] == 3:  # write, canary, then the first part alone
            rig.sink.faults.append(SinkError("down"))

    rig.sink.before_write = outage_once
    assert rig.writer.handle([good, bad])
    assert rig.clock.waits == [pytest.approx(rig.clock.waits[0])] and \
        0.25 <= rig.clock.waits[0] <= 0.5
    assert rig.broker.stored_at_ack == [{"gw-a": Counter({1: 1})}]
    assert [d.reason for d in rig.deadletters.recent(5)] == ["sink_refused"]
    assert rig.metrics.sink_errors.values() == {("transient",): 1, ("refused",): 1}


def test_narrowing_down_backs_off_per_part(make: Callable[..., Rig],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "random", lambda: 1.0)
    r = make(retry_min_s=1.0, retry_max_s=100.0)
    r.sink.refuse = poison
    calls = [0]

    def outage() -> None:
        calls[0] += 1
        if calls[0] in (3, 4, 5):  # the first part alone, three times
            r.sink.faults.append(SinkError("down"))

    r.sink.before_write = outage
    assert r.writer.handle([seqs("gw-a", 1), batch("gw-b", [reading(1, "poison/1")])])
    assert r.clock.waits == [1.0, 2.0, 4.0]
    assert r.stored() == {"gw-a": Counter({1: 1})}


def test_narrowing_down_gives_up_when_its_item_cannot_be_acknowledged(rig: Rig) -> None:
    rig.sink.refuse = poison
    calls = [0]

    def outage() -> None:
        calls[0] += 1
        if calls[0] == 3:
            rig.sink.faults.append(SinkError("down"))

    rig.sink.before_write = outage
    rig.broker.current = lambda _: False
    assert rig.writer.handle([seqs("gw-a", 1), batch("gw-b", [reading(1, "poison/1")])]) \
        is False
    assert rig.broker.acked == [] and rig.fresh("gw-a", 1) == [True]
    assert len(rig.deadletters) == 0


# -- the periodic work ---------------------------------------------------------------------


def own_point() -> Point:
    return Point("fg_risk", (("site", "site-t"),), (("colour", "red"),), NOW * 1_000_000)


def test_write_extra_tries_once_and_keeps_its_points_for_the_next_tick(rig: Rig) -> None:
    assert rig.writer._write_extra([own_point()]) is True
    assert measurements(rig.sink.writes[0]) == ["fg_risk"]
    rig.sink.faults = [SinkError("down " + "z" * 400)]
    assert rig.writer._write_extra([own_point()]) is False
    assert rig.metrics.sink_errors.values() == {("transient",): 1}
    assert rig.writer.sink_error == ("down " + "z" * 400)[:300]
    assert rig.clock.waits == [] and len(rig.sink.attempts) == 2  # one try, no canary
    rig.sink.faults = [SinkError("HTTP 401", permanent=True, status=401)]
    assert rig.writer._write_extra([own_point()]) is False
    assert rig.metrics.sink_errors.values() == {("transient",): 2}


def test_write_extra_drops_points_the_store_refuses_for_good(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.sink.faults = [SinkError("HTTP 400", permanent=True, status=400)]
    with caplog.at_level(logging.ERROR, logger=WLOG):
        assert rig.writer._write_extra([own_point(), own_point()]) is True
    assert caplog.messages == [
        "sink sqlite refused 2 of the collector's own points (HTTP 400): dropped"]
    assert rig.metrics.sink_errors.values() == {("refused",): 1}
    assert measurements(rig.sink.writes[0]) == ["fg_collector"]  # only the canary stored


def old_points(n: int) -> list[Point]:
    return [Point("fg_value", (("gateway", "gw-o"),), (("seq", i),), i + 1)
            for i in range(n)]


def test_retention_deletes_in_batches_then_waits_an_hour(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    try:
        r.sink.close()
        r.sink = FaultySink(tmp_path / "old.sqlite")
        r.sink.retention_days = 1
        r.writer.sink = r.sink
        r.sink.write(old_points(5001))
        r.writer._retain()
        assert r.sink.count() == 1 and r.metrics.store_pruned.value() == 5000
        r.writer._retain()  # a full batch: the next tick goes on
        assert r.sink.count() == 0 and r.metrics.store_pruned.value() == 5001
        r.sink.write(old_points(3))
        r.writer._retain()  # less than a batch last time: an hour from then
        assert r.sink.count() == 3
        r.writer._prune_at -= 3599.5
        r.writer._retain()
        assert r.sink.count() == 3
        r.writer._prune_at -= 1.0  # an hour and half a second
        r.writer._retain()
        assert r.sink.count() == 0 and r.metrics.store_pruned.value() == 5004
    finally:
        r.close()


def test_retention_that_fails_is_tried_again_in_a_minute(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = Rig(tmp_path)
    try:
        r.sink.retention_days = 1
        r.sink.write(old_points(2))
        # A real SQLite refusal: a trigger another connection added aborts the delete.
        other = sqlite3.connect(r.sink.path)
        other.execute("CREATE TRIGGER no_delete BEFORE DELETE ON points "
                      "BEGIN SELECT RAISE(ABORT, 'kept'); END")
        other.commit()
        with caplog.at_level(logging.WARNING, logger=WLOG):
            r.writer._retain()
        assert r.sink.count() == 2 and r.metrics.store_pruned.value() == 0
        assert caplog.messages == [
            f"sink sqlite: deleting points past retention failed (store {r.sink.path}: "
            "prune: kept); trying again in a minute"]
        other.execute("DROP TRIGGER no_delete")
        other.commit()
        other.close()
        r.writer._retain()  # within the minute: not tried
        assert r.sink.count() == 2
        r.writer._prune_at -= 59.5
        r.writer._retain()
        assert r.sink.count() == 2
        r.writer._prune_at -= 1.0  # a minute and half a second
        r.writer._retain()
        assert r.sink.count() == 0
    finally:
        r.close()


def test_a_store_without_prune_is_left_to_its_own_retention(rig: Rig) -> None:
    influx = InfluxSink(SinkConfig(influx_url="http://127.0.0.1:9"))  # nothing connects
    try:
        rig.writer.sink = influx
        rig.writer._retain()
        assert rig.metrics.store_pruned.value() == 0
    finally:
        influx.close()


def test_retention_keeps_everything_with_retention_off(rig: Rig) -> None:
    rig.sink.write(old_points(2))
    rig.writer._retain()
    assert rig.sink.count() == 2 and rig.metrics.store_pruned.value() == 0


# -- gathering a group ------------------------------------------------------------------------


def test_a_backlog_is_taken_up_to_eight_times_the_group(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=2)
    items = [seqs("gw-a", i) for i in range(1, 21)]
    for i in items:
        r.prepared.put(i)
    assert r.writer._gather() == items[:16]
    assert r.writer._gather() == items[16:]


def test_the_points_bound_ends_a_group(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=50, group_max_points=4)
    items = [seqs("gw-a", 2 * i, 2 * i + 1) for i in range(1, 6)]  # two points each
    for i in items:
        r.prepared.put(i)
    assert r.writer._gather() == items[:2]  # 4 points: the bound
    assert r.writer._gather() == items[2:4]
    assert r.writer._gather() == items[4:]


def test_the_backlog_is_asked_for_what_is_left_of_the_bounds(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=2, group_max_points=100)
    waiting = [batch("gw-u", [fire(i)]) for i in range(1, 4)]
    asked: list[tuple[int, int]] = []

    def backlog(n: int, points: int) -> list[Prepared]:
        asked.append((n, points))
        return waiting

    r.writer.backlog = backlog
    first = seqs("gw-a", 1, 2)
    r.prepared.put(first)
    assert r.writer._gather() == [first, *waiting]
    assert asked == [(15, 98)]


def test_the_backlog_is_not_asked_when_a_bound_is_reached(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=1, group_max_points=100)
    asked: list[tuple[int, int]] = []
    r.writer.backlog = lambda n, p: asked.append((n, p)) or []  # type: ignore[func-returns-value]
    items = [seqs("gw-a", i) for i in range(1, 9)]
    for i in items:
        r.prepared.put(i)
    assert r.writer._gather() == items  # 8 items: the cap
    assert asked == []
    r2 = make(group_max_messages=10, group_max_points=2)
    r2.writer.backlog = lambda n, p: asked.append((n, p)) or []  # type: ignore[func-returns-value]
    r2.prepared.put(seqs("gw-a", 1, 2))
    assert len(r2.writer._gather()) == 1  # 2 points: the bound
    assert asked == []
    r2.prepared.put(seqs("gw-a", 3))
    assert len(r2.writer._gather()) == 1
    assert asked == [(79, 1)]


def test_the_backlog_counts_towards_the_group(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=2, group_max_points=100, group_wait_ms=60_000.0)
    r.writer.backlog = lambda n, p: [seqs("gw-u", 1)]
    r.prepared.put(seqs("gw-a", 1))
    assert len(r.writer._gather()) == 2  # full: no waiting for a third


def test_the_backlog_points_count_towards_the_bound(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=3, group_max_points=3, group_wait_ms=60_000.0)
    r.writer.backlog = lambda n, p: [seqs("gw-u", 1, 2)]
    r.prepared.put(seqs("gw-a", 1))
    assert len(r.writer._gather()) == 2  # 3 points: no waiting


def gather_in_thread(r: Rig) -> tuple[threading.Thread, list[list[Prepared]]]:
    out: list[list[Prepared]] = []
    t = threading.Thread(target=lambda: out.append(r.writer._gather()), daemon=True)
    t.start()
    return t, out


def test_a_group_waits_for_more_items_within_group_wait(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=3, group_wait_ms=60_000.0)
    items = [seqs("gw-a", i) for i in (1, 2, 3, 4)]
    r.prepared.put(items[0])
    t, out = gather_in_thread(r)
    wait_until(r.prepared.empty, "the first item taken")
    r.prepared.put(items[1])
    wait_until(r.prepared.empty, "the second item taken")
    r.prepared.put(items[2])
    r.prepared.put(items[3])
    t.join(30)
    assert out == [items[:3]]
    assert r.prepared.get_nowait() is items[3]


def test_a_fire_alarm_goes_at_once(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=3, group_wait_ms=60_000.0)
    alarm = batch("gw-f", [fire(1)])
    assert alarm.urgent
    r.prepared.put(seqs("gw-a", 1))
    r.prepared.put(alarm)
    t, out = gather_in_thread(r)
    t.join(30)
    assert not t.is_alive() and len(out[0]) == 2
    # From the backlog too.
    r.writer.backlog = lambda n, p: [batch("gw-f", [fire(2)])]
    r.prepared.put(seqs("gw-a", 2))
    t, out = gather_in_thread(r)
    t.join(30)
    assert not t.is_alive() and len(out[0]) == 2
    # And first.
    r.writer.backlog = None
    r.prepared.put(batch("gw-f", [fire(3)]))
    t, out = gather_in_thread(r)
    t.join(30)
    assert not t.is_alive() and len(out[0]) == 1
    # An alarm followed by ordinary items: still urgent.
    r.prepared.put(batch("gw-f", [fire(5)]))
    r.prepared.put(seqs("gw-a", 3))
    t, out = gather_in_thread(r)
    t.join(30)
    assert not t.is_alive() and len(out[0]) == 2
    wide = make(group_max_messages=5, group_wait_ms=60_000.0)
    wide.writer.backlog = lambda n, p: [batch("gw-f", [fire(6)]), seqs("gw-u", 1)]
    wide.prepared.put(seqs("gw-a", 4))
    t, out = gather_in_thread(wide)
    t.join(30)
    assert not t.is_alive() and len(out[0]) == 3  # an alarm then an ordinary item


def test_an_urgent_item_taken_while_waiting_ends_the_wait(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=4, group_wait_ms=60_000.0)
    r.prepared.put(seqs("gw-a", 1))
    t, out = gather_in_thread(r)
    wait_until(r.prepared.empty, "the first item taken")
    r.prepared.put(batch("gw-f", [fire(1)]))
    t.join(30)
    assert not t.is_alive() and len(out[0]) == 2


def waiting(r: Rig) -> bool:
    """The gathering thread is blocked in the queue's ``get``, waiting for more."""
    return r.prepared.empty() and len(r.prepared.not_empty._waiters) == 1  # type: ignore[attr-defined]


def put_together(r: Rig, *items: Prepared) -> None:
    """Several items into the queue at once: the waiting thread wakes to all of them."""
    with r.prepared.mutex:
        r.prepared.queue.extend(items)
        r.prepared.unfinished_tasks += len(items)
        r.prepared.not_empty.notify()


def test_an_alarm_then_ordinary_items_while_waiting_still_end_the_wait(
        make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=5, group_wait_ms=60_000.0)
    r.prepared.put(seqs("gw-a", 1))
    t, out = gather_in_thread(r)
    wait_until(lambda: waiting(r), "the thread waiting for more")
    put_together(r, batch("gw-f", [fire(1)]), seqs("gw-a", 2))
    t.join(30)
    assert not t.is_alive() and len(out[0]) == 3


def test_items_taken_while_waiting_count_towards_the_points_bound(
        make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=10, group_max_points=3, group_wait_ms=60_000.0)
    first, second = seqs("gw-a", 1), seqs("gw-a", 2, 3)
    r.prepared.put(first)
    t, out = gather_in_thread(r)
    wait_until(lambda: waiting(r), "the thread waiting for more")
    r.prepared.put(second)  # 3 points: the bound, no more waiting
    t.join(30)
    assert not t.is_alive() and out == [[first, second]]


def test_a_group_waits_the_whole_group_wait_for_more(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=4, group_wait_ms=1_000.0)
    one = seqs("gw-a", 1)
    r.prepared.put(one)
    t0 = time.monotonic()
    assert r.writer._gather() == [one]
    assert time.monotonic() - t0 >= 1.0  # it returns at its deadline, not before


def test_without_a_wait_a_group_is_what_is_there(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=4, group_wait_ms=0.0)
    one = seqs("gw-a", 1)
    r.prepared.put(one)
    assert r.writer._gather() == [one]


def test_a_group_waits_no_longer_than_group_wait(make: Callable[..., Rig]) -> None:
    r = make(group_max_messages=4, group_wait_ms=20.0)
    one = seqs("gw-a", 1)
    r.prepared.put(one)
    assert r.writer._gather() == [one]  # nothing more came within 20 ms


def test_an_empty_queue_gives_no_group(rig: Rig) -> None:
    assert rig.writer._gather() == []


# -- the loop ---------------------------------------------------------------------------------


def run_in_thread(r: Rig) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            r.writer.run()
        except BaseException as e:  # handed to the test
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def test_the_loop_handles_groups_and_writes_the_periodic_points(
        make: Callable[..., Rig]) -> None:
    rig = make(own_stop=True)
    rig.effects.pending.append(own_point())
    t, errors = run_in_thread(rig)
    try:
        wait_until(lambda: any("fg_risk" in measurements(w) for w in rig.sink.writes),
                   "the periodic points, written by the tick")
        assert rig.broker.acked == [] and rig.effects.pending == []
        rig.prepared.put(seqs("gw-a", 1))
        wait_until(lambda: len(rig.broker.acked) == 1, "the group")
        rig.prepared.put(seqs("gw-a", 2))
        wait_until(lambda: len(rig.broker.acked) == 2, "the second group")
    finally:
        rig.writer.stop.set()
        t.join(30)
    assert not t.is_alive() and errors == []
    assert rig.broker.uncommitted_at_ack == [[], []]


def test_the_periodic_work_runs_twice_a_second_not_after_every_group(
        make: Callable[..., Rig]) -> None:
    rig = make(own_stop=True, group_max_points=1)  # one item a group
    for i in range(1, 21):
        rig.prepared.put(seqs("gw-a", i))
    t0 = time.monotonic()
    t, errors = run_in_thread(rig)
    try:
        wait_until(lambda: len(rig.broker.acked) == 20, "twenty groups")
    finally:
        rig.writer.stop.set()
        t.join(30)
    elapsed = time.monotonic() - t0
    assert errors == [] and rig.ticks >= 1
    assert rig.ticks <= 1 + elapsed / 0.5  # TICK_S apart at least


def test_the_loop_ends_with_the_error_when_the_ledger_fails(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.ledger.close()
    rig.prepared.put(seqs("gw-a", 1))
    with caplog.at_level(logging.ERROR, logger=WLOG):
        t, errors = run_in_thread(rig)
        t.join(30)
    assert not t.is_alive() and len(errors) == 1
    assert rig.broker.acked == []
    assert "the writer failed; nothing unstored was acknowledged" in caplog.messages


def test_the_loop_asks_for_missing_records_and_an_answer_settles_them(
        make: Callable[..., Rig]) -> None:
    r = make(desk=True, own_stop=True)
    r.ledger.commit("gw-r", [1, 5], NOW, EPOCH)
    t, errors = run_in_thread(r)
    try:
        wait_until(lambda: any(tp.endswith("/cmd") for tp, _ in r.broker.published),
                   "a resend request")
    finally:
        r.writer.stop.set()
        t.join(30)
    assert errors == []
    (cmd,) = [decode_command(p) for tp, p in r.broker.published if tp == "firegate/v1/gw-r/cmd"]
    assert dict(cmd.args)["first"] == 2 and dict(cmd.args)["last"] == 4
    answer = prepare(inbound("gw-r", "cmd/ack", encode_ack(
        CommandAck(cmd.id, True, NOW, result={"missing": [[2, 4]]}))))
    assert r.writer.handle([answer])
    assert r.metrics.records_lost.value() == 3
    assert r.broker.acked == [[answer.inbound]]


def test_requests_for_missing_records_are_spaced(make: Callable[..., Rig]) -> None:
    r = make(desk=True)
    r.ledger.commit("gw-r", [1, 5], NOW, EPOCH)
    r.writer._request_missing()
    r.writer._request_missing()  # within 2 s: not asked
    assert len(r.broker.published) == 1
    r.writer._last_request -= 2.5
    r.writer._request_missing()
    assert len(r.broker.published) == 2
    r.writer._last_request -= 1.0  # 1 s after the last: not yet
    r.writer._request_missing()
    assert len(r.broker.published) == 2
