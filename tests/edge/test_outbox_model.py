"""The outbox against a plain in-memory model, driven by Hypothesis' state machine:
append / next_batch / ack / nack / release_all / mark_sent / confirm / requeue_unconfirmed /
resend / expire / reopen in any order, with caps small enough that eviction happens all the
time."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge.outbox import Outbox
from protocols.wire import Priority, encode_record

from .helpers import T0, config, record

T = TypeVar("T")
MAX_ROWS = 12
MAX_BYTES = 1500  # about ten records: the byte cap and the row cap both bite
MEAS_AGE_S = 60.0


def size(p: Priority, i: int, seq: int) -> int:
    return len(encode_record(record(p, i).with_seq(seq)))


@dataclass
class Row:
    priority: Priority
    stored_ms: int
    size: int


@dataclass
class Model:
    rows: dict[int, Row] = field(default_factory=dict)
    in_flight: set[int] = field(default_factory=set)
    sent: dict[int, float] = field(default_factory=dict)  # seq -> when marked sent
    next_seq: int = 1
    evicted: list[int] = field(default_factory=lambda: [0] * 4)

    def append(self, priorities: list[Priority], now: int) -> list[int]:
        seqs = list(range(self.next_seq, self.next_seq + len(priorities)))
        self.next_seq += len(priorities)
        class_of = dict(zip(seqs, priorities, strict=True))
        incoming = {s: Row(p, now, size(p, i, s)) for i, (s, p) in enumerate(class_of.items())}
        over_rows = len(self.rows) + len(incoming) - MAX_ROWS
        over_bytes = self.nbytes() + sum(r.size for r in incoming.values()) - MAX_BYTES
        # The most valuable set stays: by class, then newest. Stored rows of a class are
        # older than incoming ones of that class.
        for p in reversed(Priority):
            victims = sorted(s for s, r in self.rows.items() if r.priority == p)
            victims += [s for s in seqs if class_of[s] == p]
            for s in victims:
                if over_rows <= 0 and over_bytes <= 0:
                    break
                victim = self.rows.pop(s, None) or incoming.pop(s)
                over_rows, over_bytes = over_rows - 1, over_bytes - victim.size
                self.evicted[p] += 1
                self.drop(s)
        self.rows.update(incoming)
        return seqs

    def drop(self, s: int) -> None:
        self.rows.pop(s, None)
        self.in_flight.discard(s)
        self.sent.pop(s, None)

    def nbytes(self) -> int:
        return sum(r.size for r in self.rows.values())

    def next_batch(self, max_records: int, max_bytes: int) -> list[int]:
        pending = sorted(
            (s for s in self.rows if s not in self.in_flight and s not in self.sent),
            key=lambda s: (self.rows[s].priority, s),
        )
        out: list[int] = []
        used = 0
        for s in pending:
            p = self.rows[s].priority
            if out and self.rows[out[0]].priority is Priority.FIRE and p is not Priority.FIRE:
                break
            extra = self.rows[s].size + (1 if out else 0)
            if len(out) == max_records or (out and used + extra > max_bytes):
                break
            out.append(s)
            used += extra
        self.in_flight.update(out)
        return out


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-model-"))
        self.now = [T0]
        self.mono = [0.0]
        self.model = Model()
        self.outbox = self.run(self._open())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _open(self) -> Outbox:
        cfg = config(
            self.dir,
            max_rows=MAX_ROWS,
            max_bytes=MAX_BYTES,
            max_age_s={Priority.MEASUREMENT: MEAS_AGE_S},
            reserve_bytes=0,
        )
        return await Outbox.open(cfg, clock_ms=lambda: self.now[0],
                                 monotonic=lambda: self.mono[0])

    def teardown(self) -> None:
        try:
            self.run(self.outbox.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(priorities=st.lists(st.sampled_from(Priority), max_size=6))
    def append(self, priorities: list[Priority]) -> None:
        records = [record(p, i) for i, p in enumerate(priorities)]
        got = self.run(self.outbox.append(records))
        assert [r.seq for r in got] == self.model.append(priorities, self.now[0])

    @rule(max_records=st.integers(1, 8), max_bytes=st.sampled_from([1, 200, 400, 10_000]))
    def next_batch(self, max_records: int, max_bytes: int) -> None:
        got = self.run(self.outbox.next_batch(max_records, max_bytes))
        assert [r.seq for r in got] == self.model.next_batch(max_records, max_bytes)
        for r in got:
            assert r.priority is self.model.rows[r.seq].priority

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        known = sorted(self.model.in_flight | set(self.model.rows) | {self.model.next_seq})
        seqs = data.draw(st.lists(st.sampled_from(known), max_size=6))
        expected = len(set(seqs) & set(self.model.rows))
        assert self.run(self.outbox.ack(seqs)) == expected
        for s in seqs:
            self.model.drop(s)

    @precondition(lambda self: self.model.in_flight)
    @rule(data=st.data())
    def puback_then_mark_sent(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.model.in_flight)), min_size=1,
                                  unique=True))  # a message's seqs
        assert self.outbox.mark_sent(seqs) == len(seqs)
        for s in seqs:
            self.model.in_flight.discard(s)
            self.model.sent.pop(s, None)
            self.model.sent[s] = self.mono[0]

    @rule(data=st.data(), foreign=st.booleans())
    def confirm(self, data: st.DataObject, foreign: bool) -> None:
        top = self.model.next_seq + 1
        bounds = data.draw(st.lists(st.integers(1, top), min_size=2, max_size=6, unique=True))
        bounds.sort()
        ranges = [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds) - 1, 2)]
        hit = {s for s in self.model.rows for a, b in ranges if a <= s <= b}
        epoch = self.outbox.epoch ^ 1 if foreign else self.outbox.epoch
        assert self.run(self.outbox.confirm(epoch, ranges)) == (0 if foreign else len(hit))
        if not foreign:
            for s in hit:
                self.model.drop(s)

    @rule(seconds=st.sampled_from([0.0, 5.0, 30.0]), timeout=st.sampled_from([0.0, 20.0]))
    def confirmations_time_out(self, seconds: float, timeout: float) -> None:
        self.mono[0] += seconds
        late = [s for s, at in self.model.sent.items() if at <= self.mono[0] - timeout]
        assert self.outbox.requeue_unconfirmed(timeout) == len(late)
        for s in late:
            del self.model.sent[s]

    @rule(first=st.integers(1, 40), span=st.integers(0, 10))
    def resend(self, first: int, span: int) -> None:
        last = first + span
        got = self.run(self.outbox.resend(self.outbox.epoch, first, last))
        held = sorted(s for s in self.model.rows if first <= s <= last)
        assert got.resent == len(held)
        missing = {s for a, b in got.missing for s in range(a, b + 1)}
        assert missing == set(range(first, last + 1)) - set(held)
        for s in held:
            self.model.sent.pop(s, None)

    @precondition(lambda self: self.model.in_flight)
    @rule(data=st.data())
    def nack(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.model.in_flight)), min_size=1))
        self.outbox.nack(seqs)
        self.model.in_flight -= set(seqs)

    @rule()
    def release_all(self) -> None:
        assert self.outbox.release_all() == len(self.model.in_flight)
        self.model.in_flight.clear()

    @rule(seconds=st.sampled_from([1, 30, 61, 3600]))
    def time_passes_and_expiry_runs(self, seconds: int) -> None:
        self.now[0] += seconds * 1000
        expired = self.run(self.outbox.expire())
        cutoff = self.now[0] - int(MEAS_AGE_S * 1000)
        old = [
            s
            for s, r in self.model.rows.items()
            if r.priority is Priority.MEASUREMENT and r.stored_ms < cutoff
        ]
        assert expired == ({Priority.MEASUREMENT: len(old)} if old else {})
        for s in old:
            self.model.drop(s)
        self.model.evicted[Priority.MEASUREMENT] += len(old)

    @rule()
    def reopen(self) -> None:
        self.run(self.outbox.close())
        self.outbox = self.run(self._open())
        self.model.in_flight.clear()  # nothing is in flight or sent after a restart
        self.model.sent.clear()

    @invariant()
    def counts_agree(self) -> None:
        s = self.run(self.outbox.stats())
        m = self.model
        assert s.depth == {p: sum(r.priority is p for r in m.rows.values()) for p in Priority}
        assert s.payload_bytes == m.nbytes()
        assert s.in_flight == len(m.in_flight)
        assert s.sent_unconfirmed == len(m.sent)
        for p in Priority:
            assert self.outbox.pending(p) == sum(
                r.priority is p and s not in m.in_flight and s not in m.sent
                for s, r in m.rows.items())
        assert s.evicted == dict(zip(Priority, m.evicted, strict=True))
        assert s.last_seq == m.next_seq - 1


OutboxMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOutboxModel = OutboxMachine.TestCase
