"""SeqLedger: dedupe and gaps per gateway, compact intervals, persistence - and a stateful
property test against a naive model (a set of seqs) with out-of-order and duplicate delivery,
orderly reopen and crash (reopen without close)."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from collector.ledger import Gap, SeqLedger


def _rows(path: Path) -> list[tuple[str, int, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT gateway, first, last FROM seq_intervals "
                            "ORDER BY gateway, first").fetchall()


def test_fresh_commit_duplicates_and_gaps(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "ledger.sqlite")
    assert ledger.fresh("gw-1", [3, 1, 2]) == [True, True, True]
    ledger.commit("gw-1", [3, 1, 2], now_ms=100)
    assert ledger.fresh("gw-1", [2, 4, 3, 9]) == [False, True, False, True]
    ledger.commit("gw-1", [9, 7], now_ms=200)  # out of order: 4..6 and 8 not here yet
    ledger.commit("gw-2", [5], now_ms=300)
    assert ledger.gaps("gw-1") == [Gap("gw-1", 4, 6, 200), Gap("gw-1", 8, 8, 200)]
    assert ledger.gaps() == [Gap("gw-1", 4, 6, 200), Gap("gw-1", 8, 8, 200),
                             Gap("gw-2", 1, 4, 300)]
    stats = ledger.stats()
    one = stats.gateways["gw-1"]
    assert (one.stored, one.duplicates, one.highest, one.gaps, one.missing) == (5, 2, 9, 2, 4)
    assert one.last_commit_ms == 200
    assert (stats.stored, stats.duplicates, stats.gaps, stats.missing) == (6, 2, 3, 8)
    ledger.commit("gw-1", [4, 5, 6, 8], now_ms=400)  # the late ones arrive: no gap left
    assert ledger.gaps("gw-1") == [] and _rows(tmp_path / "ledger.sqlite")[0] == ("gw-1", 1, 9)
    assert ledger.gaps("nobody") == []
    ledger.close()
    ledger.close()


def test_gap_since_is_the_first_commit_above_it(tmp_path: Path) -> None:
    ledger = SeqLedger(tmp_path / "ledger.sqlite")
    ledger.commit("g", [20], now_ms=50)  # 1..19 missing since 50
    ledger.commit("g", [10], now_ms=60)  # splits: 1..9 and 11..19, both since 50
    ledger.commit("g", [30], now_ms=70)  # 21..29 missing since 70
    assert ledger.gaps("g") == [Gap("g", 1, 9, 50), Gap("g", 11, 19, 50), Gap("g", 21, 29, 70)]
    assert [g.missing for g in ledger.gaps("g")] == [9, 9, 9]
    ledger.close()


def test_announced_last_seq_is_a_tail_gap_until_it_arrives(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = SeqLedger(path)
    ledger.commit("g", [1, 2, 3], now_ms=10)
    ledger.note_last_seq("g", 2, now_ms=20)  # behind what is stored: nothing missing
    assert ledger.gaps("g") == []
    ledger.note_last_seq("g", 6, now_ms=30)
    ledger.note_last_seq("g", 8, now_ms=40)
    assert ledger.gaps("g") == [Gap("g", 4, 8, 30)]
    ledger.close()
    ledger = SeqLedger(path)  # saved on close
    assert ledger.gaps("g") == [Gap("g", 4, 8, 30)]
    assert ledger.stats().gateways["g"].announced == 8
    ledger.commit("g", [4, 5, 6, 7, 8], now_ms=50)
    assert ledger.gaps("g") == []
    ledger.note_last_seq("g", 9, now_ms=60)
    assert ledger.gaps("g") == [Gap("g", 9, 9, 60)]
    ledger.note_last_seq("new", 3, now_ms=70)  # health before any record
    assert ledger.gaps("new") == [Gap("new", 1, 3, 70)]
    ledger.close()


def test_intervals_stay_compact(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = SeqLedger(path)
    for start in range(1, 100_001, 900):  # a gateway delivering 100,000 records in order
        ledger.commit("g", range(start, min(start + 900, 100_001)), now_ms=start)
    assert _rows(path) == [("g", 1, 100_000)]
    ledger.commit("h", range(2, 200, 2), now_ms=1)  # evens first, odds later: fragments ...
    assert len(_rows(path)) == 1 + 99
    ledger.commit("h", range(1, 200, 2), now_ms=2)  # ... and merges back into one
    assert _rows(path) == [("g", 1, 100_000), ("h", 1, 199)]
    assert ledger.stats().gateways["h"].stored == 199
    ledger.close()


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = SeqLedger(path)
    ledger.commit("g", [1, 2, 5], now_ms=7)
    assert ledger.fresh("g", [1, 5, 6]) == [False, False, True]
    before = ledger.stats()
    ledger.close()
    again = SeqLedger(path)
    assert again.stats() == before
    assert again.fresh("g", [2, 3]) == [False, True]
    assert again.gaps() == [Gap("g", 3, 4, 7)]
    again.close()


def test_bad_seq_and_failed_save_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = SeqLedger(path, busy_timeout_s=0.1)
    ledger.commit("g", [1], now_ms=1)
    with pytest.raises(ValueError):
        ledger.commit("g", [2, 0], now_ms=2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError):
            ledger.commit("g", [2, 3], now_ms=3)
    finally:
        other.execute("ROLLBACK")
        other.close()
    # Memory follows the database: 2 and 3 are still fresh, so a retry stores them.
    assert ledger.fresh("g", [2, 3]) == [True, True]
    assert ledger.stats().gateways["g"].stored == 1
    ledger.commit("g", [2, 3], now_ms=4)
    assert ledger.stats().gateways["g"].stored == 3
    ledger.close()


# -- stateful property test ----------------------------------------------------------------

GATEWAYS = st.sampled_from(["gw-a", "gw-b"])
DELIVERY = st.lists(st.integers(1, 40), min_size=1, max_size=10, unique=True)


class _Model:
    """What the ledger must remember, the naive way: a set of seqs per gateway."""

    def __init__(self) -> None:
        self.commit_ms: dict[int, int] = {}
        self.dups = 0
        self.announced = 0
        self.announced_ms: int | None = None
        self.last_commit_ms: int | None = None

    @property
    def highest(self) -> int:
        return max(self.commit_ms, default=0)

    def gaps(self, gw: str) -> list[Gap]:
        top = max(self.highest, self.announced)
        out: list[Gap] = []
        s = 1
        while s <= top:
            if s in self.commit_ms:
                s += 1
                continue
            e = s
            while e + 1 <= top and e + 1 not in self.commit_ms:
                e += 1
            above = [ms for seq, ms in self.commit_ms.items() if seq > e]
            since = min(above) if above else (self.announced_ms or 0)
            out.append(Gap(gw, s, e, since))
            s = e + 1
        return out

    def copy(self) -> _Model:
        m = _Model()
        m.commit_ms = dict(self.commit_ms)
        m.dups, m.announced, m.announced_ms = self.dups, self.announced, self.announced_ms
        m.last_commit_ms = self.last_commit_ms
        return m


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-"))
        self.ledger = SeqLedger(self.dir / "ledger.sqlite")
        self.now = 1000
        self.mem: dict[str, _Model] = {}
        self.saved: dict[str, _Model] = {}  # what a crash falls back to

    def _tick(self) -> int:
        self.now += 1
        return self.now

    @rule(gw=GATEWAYS, seqs=DELIVERY, crash_before_commit=st.booleans())
    def deliver(self, gw: str, seqs: list[int], crash_before_commit: bool) -> None:
        m = self.mem.get(gw)
        expected = [m is None or s not in m.commit_ms for s in seqs]
        assert self.ledger.fresh(gw, seqs) == expected
        if m is not None:
            m.dups += expected.count(False)
        if crash_before_commit:
            return
        self._commit(gw, [s for s, f in zip(seqs, expected, strict=True) if f])

    @rule(gw=GATEWAYS, seqs=DELIVERY)
    def commit_again(self, gw: str, seqs: list[int]) -> None:
        # Two messages carrying the same seq in flight at once both pass fresh() and are
        # both committed: the second commit must be harmless.
        self._commit(gw, seqs)

    def _commit(self, gw: str, seqs: list[int]) -> None:
        now = self._tick()
        self.ledger.commit(gw, seqs, now)
        m = self.mem.setdefault(gw, _Model())
        for s in seqs:
            m.commit_ms.setdefault(s, now)
        m.last_commit_ms = now
        if m.announced <= m.highest:
            m.announced_ms = None
        self.saved[gw] = m.copy()

    @rule(gw=GATEWAYS, last=st.integers(0, 50))
    def health(self, gw: str, last: int) -> None:
        now = self._tick()
        self.ledger.note_last_seq(gw, last, now)
        m = self.mem.setdefault(gw, _Model())
        m.announced = max(m.announced, last)
        if m.announced > m.highest and m.announced_ms is None:
            m.announced_ms = now

    @rule()
    def reopen(self) -> None:
        self.ledger.close()
        self.ledger = SeqLedger(self.dir / "ledger.sqlite")
        self.saved = {gw: m.copy() for gw, m in self.mem.items()}

    @rule()
    def crash(self) -> None:
        # No close(): whatever was not saved with a commit is gone; stored seqs never are.
        self.ledger = SeqLedger(self.dir / "ledger.sqlite")
        self.mem = {gw: m.copy() for gw, m in self.saved.items()}

    @invariant()
    def matches_model(self) -> None:
        stats = self.ledger.stats()
        assert set(stats.gateways) == set(self.mem)
        for gw, m in self.mem.items():
            gaps = m.gaps(gw)
            assert self.ledger.gaps(gw) == gaps
            s = stats.gateways[gw]
            assert (s.stored, s.duplicates, s.highest, s.announced, s.gaps, s.missing,
                    s.last_commit_ms) == (len(m.commit_ms), m.dups, m.highest, m.announced,
                                          len(gaps), sum(g.missing for g in gaps),
                                          m.last_commit_ms)
        assert self.ledger.gaps() == [g for gw in sorted(self.mem) for g in self.mem[gw].gaps(gw)]

    def teardown(self) -> None:
        self.ledger.close()
        shutil.rmtree(self.dir, ignore_errors=True)


LedgerMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=30,
                                           deadline=None)
test_ledger_matches_naive_model = LedgerMachine.TestCase
