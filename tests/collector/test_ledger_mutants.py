"""collector/ledger.py: what mutation testing found unguarded (docs/testing.md).

``./dev mutate ledger`` showed that a reopen was only checked after plain commits: what
``mark_lost``, ``settle_older_than`` and ``note_epoch`` save (lost counts, the closed epoch,
the tail gap's age) could be written wrong and nobody looked; that the boundaries of
"overlaps the range" and "older than" were not tried at the boundary; and that a failed
transaction's rollback was never exercised. A failure is made here the SQLite way - a
trigger that aborts the insert, added through a second connection - not with a mock.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from collector.ledger import Gap, Reset, SeqLedger

E1, E2 = 0x1111, 0x2222


def snapshot(ledger: SeqLedger) -> tuple[object, ...]:
    return ledger.stats(), ledger.gaps(), ledger.resets(), \
        {gw: ledger.current_epoch(gw) for gw in ledger.stats().gateways}


def reopened(path: Path, before: tuple[object, ...]) -> SeqLedger:
    again = SeqLedger(path)
    assert snapshot(again) == before
    return again


def on_disk(ledger: SeqLedger) -> None:
    """What the last operation saved, as a collector restarted right now (no close, no
    flush of counters kept in memory) would read it: the same as the ledger in memory. A
    later flush must not be what makes it right."""
    crashed = SeqLedger(ledger.path)
    try:
        assert snapshot(crashed) == snapshot(ledger)
    finally:
        crashed.close()


def test_what_mark_lost_saves_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = SeqLedger(path)
    ledger.commit("gw", [1, 4, 9], 10)
    ledger.note_last_seq("gw", 12, 15)  # a tail 10..12, open since 15
    assert ledger.mark_lost("gw", 2, 3, 20) == 2
    on_disk(ledger)
    stats = ledger.stats().gateways["gw"]
    assert (stats.lost, stats.stored, stats.last_commit_ms) == (2, 3, 10)  # settling is no commit
    assert ledger.gaps() == [Gap("gw", 5, 8, 10), Gap("gw", 10, 12, 15)]
    before = snapshot(ledger)
    ledger.close()
    again = reopened(path, before)
    assert again.mark_lost("gw", 10, 12, 30) == 3  # the tail too
    on_disk(again)
    assert again.gaps() == [Gap("gw", 5, 8, 10)]
    assert again.stats().gateways["gw"].lost == 5  # added to what was saved, not replacing it
    before = snapshot(again)
    again.close()
    reopened(path, before).close()


def test_mark_lost_takes_exactly_the_missing_seqs_it_touches(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    ledger.commit("gw", [1, 5, 10], 10)  # gaps 2..4 and 6..9
    assert ledger.mark_lost("gw", 11, 20, 20) == 0  # above everything known: nothing
    assert ledger.mark_lost("gw", 5, 5, 20) == 0  # a stored seq: nothing
    assert ledger.mark_lost("gw", 4, 5, 20) == 1  # touches the first gap at its last seq
    assert ledger.mark_lost("gw", 5, 6, 20) == 1  # ... and the second at its first
    assert ledger.gaps() == [Gap("gw", 2, 3, 10), Gap("gw", 7, 9, 10)]
    assert ledger.mark_lost("nobody", 1, 5, 20) == 0
    assert ledger.stats().gateways["gw"].lost == 2


def test_gaps_older_than_are_settled_the_same_age_is_not(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = SeqLedger(path)
    ledger.commit("gw", [3], 100)  # gap 1..2 since 100
    ledger.commit("gx", [2], 200)  # gap 1..1 since 200
    assert ledger.settle_older_than(100, 300) == []  # since 100 is not older than 100
    assert ledger.settle_older_than(101, 300) == [Gap("gw", 1, 2, 100)]
    on_disk(ledger)
    assert ledger.gaps() == [Gap("gx", 1, 1, 200)]
    assert ledger.stats().gateways["gw"].lost == 2
    before = snapshot(ledger)
    ledger.close()
    reopened(path, before).close()


def test_a_reset_and_the_closed_epoch_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = SeqLedger(path)
    ledger.note_epoch("gw", E1, 5)
    ledger.commit("gw", [1, 2, 5], 10, E1)
    ledger.note_last_seq("gw", 7, 11, E1)
    ledger.flush()
    reset = ledger.note_epoch("gw", E2, 20)
    assert reset == Reset("gw", 20, E1, E2, 7, 4)  # 3, 4, 6, 7 never stored
    on_disk(ledger)
    stats = ledger.stats().gateways["gw"]
    assert (stats.epoch, stats.stored, stats.resets, stats.gaps) == (E2, 0, 1, 0)
    before = snapshot(ledger)
    ledger.close()
    again = reopened(path, before)
    assert again.current_epoch("gw") == E2
    # The closed epoch keeps its seqs (a late record of it is a duplicate) and its gaps stay
    # closed; the new epoch starts empty.
    assert again.fresh("gw", [1, 3], E1) == [False, True]
    assert again.mark_lost("gw", 3, 3, 25, E1) == 1  # settling in the closed epoch ...
    on_disk(again)  # ... keeps it closed
    assert again.gaps() == []
    again.commit("gw", [2], 30, E2)
    assert again.gaps() == [Gap("gw", 1, 1, 30, E2)]
    assert again.stats().gateways["gw"].stored == 1
    again.close()


def test_a_reset_counts_per_gateway(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    for gw in ("a", "b"):
        ledger.note_epoch(gw, E1, 1)
    ledger.note_epoch("a", E2, 2)
    ledger.note_epoch("a", 0x3333, 3)
    ledger.note_epoch("b", E2, 4)
    assert {g: s.resets for g, s in ledger.stats().gateways.items()} == {"a": 2, "b": 1}
    assert [(r.gateway_id, r.new_epoch) for r in ledger.resets()] == \
        [("b", E2), ("a", 0x3333), ("a", E2)]  # newest first
    assert len(ledger.resets(limit=1)) == 1


# -- failed transactions are rolled back and change nothing ---------------------------------

def abort_inserts(path: Path, table: str) -> sqlite3.Connection:
    """A trigger, added by another connection, that makes every insert into ``table`` fail."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(f"CREATE TRIGGER no_{table} BEFORE INSERT ON {table} "
                  f"BEGIN SELECT RAISE(ABORT, 'injected: {table}'); END")
    return other


def allow_inserts(other: sqlite3.Connection, table: str) -> None:
    other.execute(f"DROP TRIGGER no_{table}")
    other.close()


def test_a_reset_that_cannot_be_saved_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = SeqLedger(path)
    ledger.note_epoch("gw", E1, 5)
    ledger.commit("gw", [2], 10, E1)
    before = snapshot(ledger)
    other = abort_inserts(path, "seq_resets")
    with pytest.raises(sqlite3.IntegrityError, match="injected: seq_resets"):
        ledger.note_epoch("gw", E2, 20)
    assert snapshot(ledger) == before  # still in E1, no reset counted, the old gaps open
    allow_inserts(other, "seq_resets")
    assert ledger.note_epoch("gw", E2, 21) == Reset("gw", 21, E1, E2, 2, 1)  # it can go on
    ledger.close()


def test_a_settle_that_cannot_be_saved_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = SeqLedger(path)
    ledger.commit("gw", [3], 10)
    before = snapshot(ledger)
    other = abort_inserts(path, "seq_intervals")
    with pytest.raises(sqlite3.IntegrityError, match="injected: seq_intervals"):
        ledger.mark_lost("gw", 1, 2, 20)
    assert snapshot(ledger) == before
    allow_inserts(other, "seq_intervals")
    assert ledger.mark_lost("gw", 1, 2, 21) == 2
    ledger.close()


def test_a_flush_that_cannot_be_saved_keeps_its_counts_for_the_next(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = SeqLedger(path)
    ledger.commit("gw", [1], 10)
    assert ledger.fresh("gw", [1, 1]) == [False, False]  # two duplicates, saved by flush
    other = abort_inserts(path, "seq_streams")
    with pytest.raises(sqlite3.IntegrityError, match="injected: seq_streams"):
        ledger.flush()
    allow_inserts(other, "seq_streams")
    ledger.close()  # flushes what the failed one could not
    again = SeqLedger(path)
    assert again.stats().gateways["gw"].duplicates == 2
    again.close()


# -- announced seqs (health) ------------------------------------------------------------------

def test_a_gateway_known_only_from_its_health_is_known_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = SeqLedger(path)
    assert ledger.note_last_seq("gw", 4, 10) is False
    ledger.close()
    again = SeqLedger(path)
    assert again.gaps() == [Gap("gw", 1, 4, 10)]
    assert again.stats().gateways["gw"].announced == 4
    again.close()


def test_regressions_are_counted_each_time_from_seq_1_and_never_for_0(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = SeqLedger(path)
    ledger.commit("gw", [1, 2, 3], 10)
    assert ledger.note_last_seq("gw", 0, 11) is False  # nothing assigned yet: no claim
    assert ledger.note_last_seq("gw", 3, 12) is False  # what is stored: fine
    assert ledger.note_last_seq("gw", 1, 13) is True  # below what is stored: backwards
    assert ledger.note_last_seq("gw", 2, 14) is True
    assert ledger.stats().gateways["gw"].regressions == 2
    ledger.close()
    again = SeqLedger(path)
    assert again.stats().gateways["gw"].regressions == 2  # saved on close
    again.close()


def test_a_tail_gap_is_as_old_as_the_first_report_above_the_stored_seqs(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    ledger.commit("gw", [1, 2, 3], 10)
    ledger.note_last_seq("gw", 3, 20)  # equal to what is stored: no tail yet
    assert ledger.gaps() == []
    ledger.note_last_seq("gw", 5, 30)
    assert ledger.gaps() == [Gap("gw", 4, 5, 30)]
    ledger.note_last_seq("gw", 6, 40)  # a longer tail is still as old as its start
    assert ledger.gaps() == [Gap("gw", 4, 6, 30)]
    ledger.commit("gw", [4, 5, 6], 50)
    ledger.note_last_seq("gw", 8, 60)  # a new tail after the old one filled: a new age
    assert ledger.gaps() == [Gap("gw", 7, 8, 60)]
    ledger.close()


def test_gaps_are_those_of_the_gateway_s_current_epoch_only(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    ledger.commit("gw", [2], 10, E1)  # the first epoch seen becomes the current one
    ledger.commit("gw", [3], 20, E2)  # another epoch's records, without a reset
    assert ledger.current_epoch("gw") == E1
    assert ledger.gaps() == [Gap("gw", 1, 1, 10, E1)]
    assert ledger.gaps("gw") == [Gap("gw", 1, 1, 10, E1)] and ledger.gaps("other") == []
    ledger.close()


def test_the_newest_hundred_resets_by_default(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    for epoch in range(1, 103):  # 101 resets
        ledger.note_epoch("gw", epoch, epoch)
    assert len(ledger.resets()) == 100
    assert ledger.resets()[0].new_epoch == 102 and len(ledger.resets(limit=500)) == 101
    ledger.close()


def test_a_late_record_of_a_closed_epoch_keeps_that_epoch_closed(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    ledger.note_epoch("gw", E1, 1)
    ledger.commit("gw", [1, 3], 10, E1)
    ledger.note_epoch("gw", E2, 20)
    ledger.commit("gw", [2], 30, E1)  # late, stored in its own (closed) stream
    on_disk(ledger)
    assert ledger.current_epoch("gw") == E2 and ledger.gaps() == []
    ledger.close()


def test_a_commit_that_cannot_be_saved_changes_nothing_and_the_next_one_works(
        tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = SeqLedger(path)
    ledger.commit("gw", [1], 10)
    before = snapshot(ledger)
    other = abort_inserts(path, "seq_intervals")
    with pytest.raises(sqlite3.IntegrityError, match="injected: seq_intervals"):
        ledger.commit("gw", [3], 20)
    assert snapshot(ledger) == before and ledger.fresh("gw", [3]) == [True]
    allow_inserts(other, "seq_intervals")
    ledger.commit("gw", [3], 21)
    assert ledger.gaps() == [Gap("gw", 2, 2, 21)]
    on_disk(ledger)
    ledger.close()


def test_a_seq_below_1_is_refused_even_beside_good_ones(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    with pytest.raises(ValueError, match=r"^gw: seq 0 is below 1$"):
        ledger.commit("gw", [0, 1, 2], 10)
    with pytest.raises(ValueError, match=r"^gw: seq -3 is below 1$"):
        ledger.commit("gw", [5, -3], 10, E1)
    assert ledger.stats().gateways == {} and ledger.gaps() == []
    ledger.close()


def test_stats_name_the_gateway_and_count_no_resets_as_0(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    ledger.commit("gw", [2], 10)
    (stats,) = ledger.stats().gateways.values()
    assert (stats.gateway_id, stats.resets, stats.regressions, stats.lost) == ("gw", 0, 0, 0)
    assert (stats.gaps, stats.missing, stats.epoch) == (1, 1, 0)
    ledger.close()


def test_commit_many_takes_a_bare_gateway_id_as_epoch_0(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    ledger.commit_many({"gw": [2], ("gx", E1): [1]}, 10)
    assert ledger.gaps() == [Gap("gw", 1, 1, 10, 0)]
    assert ledger.fresh("gw", [2], 0) == [False] and ledger.fresh("gw", [2], 1) == [True]
    assert (ledger.current_epoch("gw"), ledger.current_epoch("gx")) == (0, E1)
    ledger.close()


def test_a_commit_of_nothing_new_keeps_the_tail_gap_s_age(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    ledger.note_last_seq("gw", 1, 10)  # seq 1 announced, nothing stored
    ledger.commit("gw", [], 20)
    assert ledger.gaps() == [Gap("gw", 1, 1, 10)]
    assert ledger.stats().gateways["gw"].last_commit_ms == 20
    ledger.close()


def test_a_reset_to_a_smaller_epoch_number_is_still_the_current_one_after_a_restart(
        tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    ledger.commit("gw", [1, 2], 10, E2)
    assert ledger.note_epoch("gw", E1, 20) is not None  # epochs are random: E1 < E2 here
    on_disk(ledger)
    ledger.close()


def test_the_ledger_is_used_from_more_than_one_thread(tmp_path: Path) -> None:
    """The collector's decode and write threads share it (``check_same_thread=False``)."""
    import threading

    ledger = SeqLedger(tmp_path / "l.sqlite")
    errors: list[BaseException] = []

    def other() -> None:
        try:
            ledger.commit("gw", [1], 10)
            ledger.flush()
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors == [] and ledger.fresh("gw", [1]) == [False]
    ledger.close()
