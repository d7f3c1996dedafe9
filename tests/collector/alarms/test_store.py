"""Persistence: a book opened again on the same file has every alarm, its timeline, its
acknowledgement and resolution, its audit entries and its timers; closed alarms go after their
retention, open ones never; the file is WAL with synchronous=FULL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from collector.alarms.config import AlarmsConfig
from protocols.wire import EventType

from .helpers import EPOCH, NOW, PUMP, SMOKE, SMOKE_2, Clock, Sent, book, sig

FA, FAULT = EventType.FIRE_ALARM, EventType.FAULT
DAY = 86_400_000


def test_a_reopened_book_has_everything(tmp_path: Path) -> None:
    clock, sent = Clock(), Sent()
    b = book(tmp_path, clock, sent)
    b.apply([sig(SMOKE, FA, 1, source_ms=NOW - 9), sig(PUMP, FAULT, 2),
             sig(SMOKE_2, FA, 3, epoch=(1 << 64) - 5)])  # an epoch past the signed range
    fire, fault = (next(a for a in b.list() if a.source == s.id) for s in (SMOKE, PUMP))
    clock.now += 1_000
    b.acknowledge(fault.id, by="li", note="seen", origin="10.0.0.1")
    b.resolve(fault.id, verdict="real", by="li", note="bearing", origin="10.0.0.1")
    before = {a.id: a for a in b.list(state="all")}
    timelines = {i: b.timeline(i) for i in before}
    audit = b.audit()
    b.close()

    again = book(tmp_path, clock, sent)
    assert {a.id: a for a in again.list(state="all")} == before
    assert {i: again.timeline(i) for i in before} == timelines
    assert again.audit() == audit
    assert again.get(fire.id).next_step_ms == NOW + 60_000  # type: ignore[union-attr]
    assert again.next_due_ms() == NOW + 60_000
    assert again.open_counts() == {"north-1": 2}
    # The stamps survived too: the raise redelivered after a restart is no re-raise, and a
    # later record of the other epoch is.
    again.apply([sig(SMOKE, FA, 1), sig(SMOKE_2, FA, 3, epoch=(1 << 64) - 5)])
    assert again.get(fire.id).raise_count == 1  # type: ignore[union-attr]
    again.apply([sig(SMOKE, FA, 2), sig(SMOKE_2, FA, 4, epoch=(1 << 64) - 5)])
    assert {a.raise_count for a in again.list(state="open")} == {2}
    # The timer fires on time from the reopened book.
    clock.now = NOW + 60_000
    again.fire_due()
    assert sent.keys[-2:] == [f"alarm:{a.id}:step:1" for a in
                              sorted(again.list(state="open"), key=lambda a: sent.keys.index(
                                  f"alarm:{a.id}:step:0"))]


def test_the_file_is_wal_and_synchronous_full(tmp_path: Path) -> None:
    b = book(tmp_path, Clock(), Sent())
    b.apply([sig(SMOKE, FA, 1)])
    db = sqlite3.connect(tmp_path / "alarms.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert b._store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.execute("SELECT count(*) FROM alarm").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM timeline").fetchone()[0] == 2


def test_closed_alarms_are_pruned_after_their_retention_open_ones_never(tmp_path: Path) -> None:
    clock = Clock()
    b = book(tmp_path, clock, Sent(), config=AlarmsConfig(retention_days=90))
    b.apply([sig(PUMP, FAULT, 1), sig(SMOKE, FA, 2)])
    fault = next(a for a in b.list() if a.type == "fault")
    b.acknowledge(fault.id, by="x", note=None, origin="cli")
    clock.now += DAY
    b.apply([sig(PUMP, FAULT, 3, active=False)])  # closed now
    clock.now += 89 * DAY
    assert b.prune() == 0
    clock.now += DAY + 1
    assert b.prune() == 1
    assert b.get(fault.id) is None and b.timeline(fault.id) == []
    assert [a.type for a in b.list(state="all")] == ["fire_alarm"]  # open: kept however old
    assert b.audit() == []  # the audit of the pruned period went with it
    assert EPOCH  # (the helpers' epoch: stamps are per store epoch)


def test_the_latest_raise_time_survives_a_restart(tmp_path: Path) -> None:
    """What a reset after the restart compares with: the panel time of the latest raise."""
    from .helpers import SYSTEM
    clock = Clock()
    b = book(tmp_path, clock, Sent())
    b.apply([sig(SMOKE, FA, 1, source_ms=NOW - 9_000), sig(PUMP, FA, 2, source_ms=NOW - 9_000)])
    b.apply([sig(PUMP, FA, 3, source_ms=NOW - 1_000)])  # re-raised later by the panel's clock
    b.close()
    again = book(tmp_path, clock, Sent())
    again.apply([sig(SYSTEM, EventType.RESET, 4, source_ms=NOW - 5_000)])
    assert {a.source: a.state for a in again.list(state="all")} == \
        {SMOKE.id: "cleared", PUMP.id: "active"}
