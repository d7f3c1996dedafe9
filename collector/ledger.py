"""Which sequence numbers of each gateway are stored: dedupe, gaps and proof of completeness.

Every gateway numbers its records 1, 2, 3... in its outbox (strictly increasing across
restarts, docs/wire-protocol.md "Sequence numbers"). The collector asks :meth:`SeqLedger.fresh`
which records of a batch it has not stored yet (QoS 1 redelivers, an outbox resends what the
broker did not acknowledge), writes those, then :meth:`SeqLedger.commit`\\ s them. What is
left below the highest seq is a :class:`Gap`: a record not (yet) delivered - it arrives
late when the outbox sends fire alarms first - or lost for good (an outbox eviction, also
counted in ``health.evicted``).

Stored seqs are kept as **intervals** (``first..last``), in memory as three parallel sorted
lists and in SQLite as one row per interval, so a gateway that delivered a million records
in order is one row. A commit rewrites only the intervals it touched, in one transaction.

Crash safety: commit runs after the sink wrote the points and before the MQTT ack. A crash
between the write and the commit means the records come again, are fresh, and are rewritten
onto themselves (idempotent point times). WAL with ``synchronous=FULL`` keeps a commit across
a power cut, so an acknowledged record never reappears as a false gap.

Duplicate counters and announced tail seqs are kept in memory and saved with the next
commit (and on close): losing them in a crash loses a count, never a record.
"""

from __future__ import annotations

import sqlite3
import threading
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Gap", "GatewaySeqStats", "LedgerStats", "SeqLedger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seq_intervals (
    gateway  TEXT NOT NULL,
    first    INTEGER NOT NULL,
    last     INTEGER NOT NULL,
    since_ms INTEGER NOT NULL,          -- earliest commit of any seq in the interval
    PRIMARY KEY (gateway, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_gateways (
    gateway        TEXT PRIMARY KEY,
    stored         INTEGER NOT NULL,
    duplicates     INTEGER NOT NULL,
    announced      INTEGER NOT NULL,    -- highest seq the gateway said it assigned
    announced_ms   INTEGER,             -- since when `announced` is above the stored seqs
    last_commit_ms INTEGER
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs ``first..last`` (inclusive) of one gateway that are not stored.

    ``since_ms`` is when the collector first had a higher seq stored (or announced in a
    health message): a gap younger than the outbox's catch-up time is usually just late.
    """

    gateway_id: str
    first: int
    last: int
    since_ms: int

    @property
    def missing(self) -> int:
        """How many seqs the gap spans."""
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class GatewaySeqStats:
    """The ledger's view of one gateway."""

    gateway_id: str
    stored: int
    """Distinct seqs committed."""
    duplicates: int
    """Records received again after they were stored (dropped by :meth:`SeqLedger.fresh`)."""
    highest: int
    """Highest stored seq (0: none)."""
    announced: int
    """Highest seq the gateway reported in its health (``last_seq``), 0 if none."""
    gaps: int
    missing: int
    """Seqs in all gaps together."""
    last_commit_ms: int | None


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """Per-gateway stats and fleet totals."""

    gateways: Mapping[str, GatewaySeqStats] = field(default_factory=dict)

    @property
    def stored(self) -> int:
        return sum(g.stored for g in self.gateways.values())

    @property
    def duplicates(self) -> int:
        return sum(g.duplicates for g in self.gateways.values())

    @property
    def gaps(self) -> int:
        return sum(g.gaps for g in self.gateways.values())

    @property
    def missing(self) -> int:
        return sum(g.missing for g in self.gateways.values())


class _Seqs:
    """One gateway's stored seqs: disjoint, non-adjacent intervals sorted by ``first``."""

    __slots__ = ("announced", "announced_ms", "dirty", "duplicates", "firsts", "last_commit_ms",
                 "lasts", "sinces", "stored")

    def __init__(self) -> None:
        self.firsts: list[int] = []
        self.lasts: list[int] = []
        self.sinces: list[int] = []
        self.stored = 0
        self.duplicates = 0
        self.announced = 0
        self.announced_ms: int | None = None
        self.last_commit_ms: int | None = None
        self.dirty = False

    @property
    def highest(self) -> int:
        return self.lasts[-1] if self.lasts else 0

    def contains(self, seq: int) -> bool:
        i = bisect_right(self.firsts, seq) - 1
        return i >= 0 and self.lasts[i] >= seq

    def gaps(self, gateway_id: str) -> list[Gap]:
        out: list[Gap] = []
        firsts, lasts, sinces = self.firsts, self.lasts, self.sinces
        # A gap below interval i exists since the earliest commit of any seq above it.
        since = [0] * len(firsts)
        running: int | None = None
        for i in range(len(firsts) - 1, -1, -1):
            running = sinces[i] if running is None else min(running, sinces[i])
            since[i] = running
        below = 0
        for i, first in enumerate(firsts):
            if first > below + 1:
                out.append(Gap(gateway_id, below + 1, first - 1, since[i]))
            below = lasts[i]
        if self.announced > below:
            out.append(Gap(gateway_id, below + 1, self.announced, self.announced_ms or 0))
        return out


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted distinct seqs as runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if runs and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs


@dataclass(slots=True)
class _Plan:
    """One gateway's part of a commit, computed before the transaction."""

    gateway_id: str
    state: _Seqs
    firsts: list[int]
    lasts: list[int]
    sinces: list[int]
    removed: set[int]
    upserts: dict[int, tuple[int, int]]
    added: int
    announced_ms: int | None


class SeqLedger:
    """Per-gateway stored seqs, persisted in the SQLite file ``path``. Thread-safe."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False,
                                     isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._gw: dict[str, _Seqs] = {}
        self._closed = False
        self._load()

    def _load(self) -> None:
        for gw, stored, dups, announced, announced_ms, last_ms in self._conn.execute(
                "SELECT gateway, stored, duplicates, announced, announced_ms, last_commit_ms "
                "FROM seq_gateways"):
            st = self._gw[gw] = _Seqs()
            st.stored, st.duplicates, st.announced = stored, dups, announced
            st.announced_ms, st.last_commit_ms = announced_ms, last_ms
        for gw, first, last, since in self._conn.execute(
                "SELECT gateway, first, last, since_ms FROM seq_intervals "
                "ORDER BY gateway, first"):
            st = self._gw.setdefault(gw, _Seqs())
            st.firsts.append(first)
            st.lasts.append(last)
            st.sinces.append(since)

    def fresh(self, gateway_id: str, seqs: Sequence[int]) -> list[bool]:
        """For each seq: True when it is not stored yet. Stored ones count as duplicates."""
        with self._lock:
            st = self._gw.get(gateway_id)
            if st is None or not st.lasts:
                return [True] * len(seqs)
            highest = st.highest
            out = [s > highest or not st.contains(s) for s in seqs]
            dups = len(out) - sum(out)
            if dups:
                st.duplicates += dups
                st.dirty = True
            return out

    def commit(self, gateway_id: str, seqs: Sequence[int], now_ms: int) -> None:
        """Record ``seqs`` as stored (after the sink wrote them). Idempotent.

        Raises ValueError for a seq below 1 and sqlite3.Error when the ledger cannot be
        saved; the in-memory state changes only after the transaction committed.
        """
        self.commit_many({gateway_id: seqs}, now_ms)

    def commit_many(self, commits: Mapping[str, Sequence[int]], now_ms: int) -> None:
        """:meth:`commit` for several gateways in **one** transaction (one fsync): the
        pipeline commits a whole write group at once. All or nothing."""
        with self._lock:
            plans = [self._plan(gw, seqs, now_ms) for gw, seqs in commits.items()]
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                for p in plans:
                    conn.executemany(
                        "DELETE FROM seq_intervals WHERE gateway = ? AND first = ?",
                        [(p.gateway_id, f) for f in p.removed - p.upserts.keys()])
                    conn.executemany(
                        "INSERT OR REPLACE INTO seq_intervals VALUES (?, ?, ?, ?)",
                        [(p.gateway_id, f, last, since)
                         for f, (last, since) in p.upserts.items()])
                    st = p.state
                    self._save_gateway(p.gateway_id, st.stored + p.added, st.duplicates,
                                       st.announced, p.announced_ms, now_ms)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            for p in plans:
                st = p.state
                if p.gateway_id not in self._gw:
                    self._gw[p.gateway_id] = st
                st.firsts, st.lasts, st.sinces = p.firsts, p.lasts, p.sinces
                st.stored += p.added
                st.announced_ms = p.announced_ms
                st.last_commit_ms = now_ms
                st.dirty = False

    def _plan(self, gateway_id: str, seqs: Sequence[int], now_ms: int) -> _Plan:
        """The new intervals of one gateway after committing ``seqs`` (copies; nothing
        changes until the transaction committed)."""
        st = self._gw.get(gateway_id) or _Seqs()
        runs = _runs(s for s in seqs if not st.contains(s))
        if runs and runs[0][0] < 1:
            raise ValueError(f"{gateway_id}: seq {runs[0][0]} is below 1")
        firsts, lasts, sinces = list(st.firsts), list(st.lasts), list(st.sinces)
        removed: set[int] = set()
        upserts: dict[int, tuple[int, int]] = {}
        for a, b in runs:
            first, last, since = a, b, now_ms
            i = bisect_right(firsts, a)  # no interval overlaps a..b: none is stored
            if i > 0 and lasts[i - 1] == a - 1:  # joins the interval on its left
                i -= 1
                first, since = firsts[i], min(since, sinces[i])
                del firsts[i], lasts[i], sinces[i]
            if i < len(firsts) and firsts[i] == b + 1:  # ... and the one on its right
                last, since = lasts[i], min(since, sinces[i])
                removed.add(firsts[i])
                upserts.pop(firsts[i], None)
                del firsts[i], lasts[i], sinces[i]
            firsts.insert(i, first)
            lasts.insert(i, last)
            sinces.insert(i, since)
            upserts[first] = (last, since)
        highest = lasts[-1] if lasts else 0
        return _Plan(gateway_id, st, firsts, lasts, sinces, removed, upserts,
                     sum(b - a + 1 for a, b in runs),
                     st.announced_ms if st.announced > highest else None)

    def _save_gateway(self, gw: str, stored: int, dups: int, announced: int,
                      announced_ms: int | None, last_ms: int | None) -> None:
        self._conn.execute("INSERT OR REPLACE INTO seq_gateways VALUES (?, ?, ?, ?, ?, ?)",
                           (gw, stored, dups, announced, announced_ms, last_ms))

    def note_last_seq(self, gateway_id: str, last_seq: int, now_ms: int) -> None:
        """The gateway reported ``last_seq`` (health): seqs above the stored ones up to it are
        a tail gap until they arrive. Saved with the next commit or on close."""
        with self._lock:
            st = self._gw.get(gateway_id)
            if st is None:  # a gateway known only from its health is known after a restart
                st = self._gw[gateway_id] = _Seqs()
                st.dirty = True
            if last_seq > st.announced:
                st.announced = last_seq
                st.dirty = True
            if st.announced > st.highest and st.announced_ms is None:
                st.announced_ms = now_ms
                st.dirty = True

    def gaps(self, gateway_id: str | None = None) -> list[Gap]:
        """Missing ranges below the highest seq stored or announced, by gateway and seq."""
        with self._lock:
            if gateway_id is not None:
                st = self._gw.get(gateway_id)
                return st.gaps(gateway_id) if st is not None else []
            return [g for gw in sorted(self._gw) for g in self._gw[gw].gaps(gw)]

    def stats(self) -> LedgerStats:
        """Per-gateway counts (see :class:`GatewaySeqStats`)."""
        with self._lock:
            out: dict[str, GatewaySeqStats] = {}
            for gw in sorted(self._gw):
                st = self._gw[gw]
                gaps = st.gaps(gw)
                out[gw] = GatewaySeqStats(gw, st.stored, st.duplicates, st.highest,
                                          st.announced, len(gaps),
                                          sum(g.missing for g in gaps), st.last_commit_ms)
            return LedgerStats(out)

    def flush(self) -> None:
        """Save counters changed since the last commit (duplicates, announced seqs)."""
        with self._lock:
            dirty = [(gw, st) for gw, st in self._gw.items() if st.dirty]
            if not dirty:
                return
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for gw, st in dirty:
                    self._save_gateway(gw, st.stored, st.duplicates, st.announced,
                                       st.announced_ms, st.last_commit_ms)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            for _, st in dirty:
                st.dirty = False

    def close(self) -> None:
        """Save counters and close the database. Idempotent."""
        if self._closed:
            return
        self.flush()
        with self._lock:
            self._closed = True
            self._conn.close()
