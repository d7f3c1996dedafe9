"""SeqLedger and epochs (docs/wire-protocol.md, "Epochs"): seqs are unique per (gateway,
epoch); a new epoch is a reset that closes the old epoch's gaps with its final state; a seq
that goes backwards inside one epoch is counted; a ledger from before epochs is read as
epoch 0."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from collector.ledger import Gap, Reset, SeqLedger

E1, E2 = 0x1111, 0x2222


def test_each_epoch_has_its_own_seqs(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    assert ledger.note_epoch("gw", E1, 10) is None  # the first epoch seen: not a reset
    ledger.commit("gw", [1, 2, 3], 10, E1)
    assert ledger.fresh("gw", [1, 2, 3], E1) == [False, False, False]
    assert ledger.fresh("gw", [1, 2, 3], E2) == [True, True, True]  # a new store's 1, 2, 3
    assert ledger.fresh("gw", [1], 0) == [True]
    ledger.close()


def test_a_new_epoch_is_a_reset_that_closes_the_old_gaps(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = SeqLedger(path)
    ledger.note_epoch("gw", E1, 10)
    ledger.commit("gw", [1, 2, 5], 10, E1)
    ledger.note_last_seq("gw", 7, 11, E1)
    assert ledger.gaps() == [Gap("gw", 3, 4, 10, E1), Gap("gw", 6, 7, 11, E1)]
    reset = ledger.note_epoch("gw", E2, 20)
    assert reset == Reset("gw", 20, E1, E2, old_highest=7, old_missing=4)
    assert ledger.gaps() == []  # closed as lost, in the reset; not open for ever
    assert ledger.current_epoch("gw") == E2
    assert ledger.note_epoch("gw", E2, 21) is None
    assert ledger.note_epoch("gw", E1, 22) is None  # a late message of the old epoch
    assert ledger.fresh("gw", [5, 6], E1) == [False, True]  # still de-duplicated in its own
    ledger.commit("gw", [2], 30, E2)
    assert ledger.gaps() == [Gap("gw", 1, 1, 30, E2)]
    stats = ledger.stats().gateways["gw"]
    assert (stats.epoch, stats.resets, stats.stored, stats.highest) == (E2, 1, 1, 2)
    ledger.close()
    again = SeqLedger(path)  # all of it survives a restart
    try:
        assert again.current_epoch("gw") == E2
        assert again.resets() == [reset]
        assert again.gaps() == [Gap("gw", 1, 1, 30, E2)]
        assert again.fresh("gw", [1, 2], E2) == [True, False]
        assert again.note_epoch("gw", 0x3333, 40) is not None
        assert [r.new_epoch for r in again.resets()] == [0x3333, E2]
    finally:
        again.close()


def test_a_seq_going_backwards_inside_an_epoch_is_counted(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    ledger.commit("gw", [1, 2, 3, 4], 10, E1)
    assert ledger.note_last_seq("gw", 4, 11, E1) is False
    assert ledger.note_last_seq("gw", 9, 12, E1) is False
    assert ledger.note_last_seq("gw", 2, 13, E1) is True  # a store restored from a copy
    assert ledger.note_last_seq("gw", 2, 14, E2) is False  # another epoch: its own count
    assert ledger.stats().gateways["gw"].regressions == 1
    ledger.close()


def test_a_ledger_from_before_epochs_is_read_as_epoch_0(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE seq_intervals (gateway TEXT NOT NULL, first INTEGER NOT NULL,
                last INTEGER NOT NULL, since_ms INTEGER NOT NULL,
                PRIMARY KEY (gateway, first)) WITHOUT ROWID;
            CREATE TABLE seq_gateways (gateway TEXT PRIMARY KEY, stored INTEGER NOT NULL,
                duplicates INTEGER NOT NULL, announced INTEGER NOT NULL, announced_ms INTEGER,
                last_commit_ms INTEGER) WITHOUT ROWID;
            INSERT INTO seq_intervals VALUES ('gw', 1, 3, 5), ('gw', 6, 6, 7);
            INSERT INTO seq_gateways VALUES ('gw', 4, 2, 6, NULL, 7);
            """)
    ledger = SeqLedger(path)
    try:
        assert ledger.fresh("gw", [2, 4, 6]) == [False, True, False]
        assert ledger.gaps() == [Gap("gw", 4, 5, 7, 0)]
        stats = ledger.stats().gateways["gw"]
        assert (stats.stored, stats.epoch) == (4, 0)
        assert ledger.note_epoch("gw", E1, 8) == Reset("gw", 8, 0, E1, 6, 2)
    finally:
        ledger.close()


def _interval_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM seq_intervals").fetchone()[0])


def test_old_gaps_are_settled_as_lost_and_the_ledger_shrinks(tmp_path: Path) -> None:
    """Scattered seqs make one interval row each (100,000 made 100,000 in the field);
    settled, they are one again."""
    path = tmp_path / "l.sqlite"
    ledger = SeqLedger(path)
    try:
        for start in range(1, 10_000, 1000):  # every other seq, in batches as they arrive
            ledger.commit("gw", range(start, start + 1000, 2), 10, E1)
        assert _interval_rows(path) == 5_000
        ledger.commit("gw", [20_000], 50, E1)  # a later gap, younger
        assert len(ledger.settle_older_than(20, 60)) == 4_999
        assert [(g.first, g.last) for g in ledger.gaps()] == [(10_000, 19_999)]  # young
        assert _interval_rows(path) == 2
        stats = ledger.stats().gateways["gw"]
        assert (stats.stored, stats.lost) == (5_001, 4_999)
        assert ledger.fresh("gw", [4, 20_001], E1) == [False, True]  # settled: not fresh
    finally:
        ledger.close()
    again = SeqLedger(path)
    try:
        assert again.stats().gateways["gw"].lost == 4_999
    finally:
        again.close()


def test_a_gateways_answer_settles_only_what_is_missing(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "l.sqlite")
    try:
        ledger.commit("gw", [1, 2, 6, 9], 10, E1)
        assert ledger.mark_lost("gw", 2, 7, 20, E1) == 4  # 3..5 and 7; 2 and 6 are stored
        assert [(g.first, g.last) for g in ledger.gaps()] == [(8, 8)]
        assert ledger.mark_lost("gw", 1, 9, 30, E2) == 0  # an epoch it does not know
    finally:
        ledger.close()
