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

**Epochs** (docs/wire-protocol.md, "Epochs"): seqs are unique within one epoch of a gateway's
store, so everything here is kept per *stream*, (gateway, epoch). A batch in an epoch the
ledger has not seen for that gateway is a reset (:meth:`SeqLedger.note_epoch`): the new epoch
becomes the gateway's current one, and the previous one is closed - its final state (highest
seq, what was still missing) is kept as a :class:`Reset`, and its gaps are no longer reported
as open. A late record of an older epoch is still de-duplicated in its own stream.
"""

from __future__ import annotations

import sqlite3
import threading
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.files import private_file
from protocols.wire import seq_ranges

__all__ = ["Gap", "GatewaySeqStats", "LedgerStats", "Reset", "SeqLedger", "StreamKey"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seq_intervals (
    gateway  TEXT NOT NULL,
    epoch    INTEGER NOT NULL,
    first    INTEGER NOT NULL,
    last     INTEGER NOT NULL,
    since_ms INTEGER NOT NULL,          -- earliest commit of any seq in the interval
    PRIMARY KEY (gateway, epoch, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_streams (
    gateway        TEXT NOT NULL,
    epoch          INTEGER NOT NULL,
    stored         INTEGER NOT NULL,
    duplicates     INTEGER NOT NULL,
    announced      INTEGER NOT NULL,    -- highest seq the gateway said it assigned
    announced_ms   INTEGER,             -- since when `announced` is above the stored seqs
    last_commit_ms INTEGER,
    regressions    INTEGER NOT NULL DEFAULT 0,  -- announced seqs that went backwards
    closed_ms      INTEGER,             -- when a newer epoch replaced this one
    lost           INTEGER NOT NULL DEFAULT 0,  -- seqs the gateway said it no longer has
    PRIMARY KEY (gateway, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_resets (
    gateway     TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    old_epoch   INTEGER NOT NULL,
    new_epoch   INTEGER NOT NULL,
    old_highest INTEGER NOT NULL,
    old_missing INTEGER NOT NULL,
    PRIMARY KEY (gateway, new_epoch)
) WITHOUT ROWID;
"""

StreamKey = tuple[str, int]
"""(gateway id, epoch)."""


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
    epoch: int = 0

    @property
    def missing(self) -> int:
        """How many seqs the gap spans."""
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class Reset:
    """A gateway began a new epoch (its store is new): the old epoch's final state."""

    gateway_id: str
    at_ms: int
    old_epoch: int
    new_epoch: int
    old_highest: int
    """Highest seq stored (or announced) in the old epoch."""
    old_missing: int
    """Seqs of the old epoch never stored: lost with the old store."""


@dataclass(frozen=True, slots=True)
class GatewaySeqStats:
    """The ledger's view of one gateway."""

    gateway_id: str
    stored: int
    """Distinct seqs committed (in the current epoch)."""
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
    epoch: int = 0
    """The gateway's current epoch."""
    resets: int = 0
    """Epochs the gateway began after its first."""
    regressions: int = 0
    """Times its announced seq went backwards inside one epoch."""
    lost: int = 0
    """Seqs of the current epoch the gateway said it no longer has (:meth:`SeqLedger.mark_lost`)."""


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

    __slots__ = ("announced", "announced_ms", "closed_ms", "dirty", "duplicates", "firsts",
                 "last_commit_ms", "lasts", "lost", "regressions", "sinces", "stored")

    def __init__(self) -> None:
        self.firsts: list[int] = []
        self.lasts: list[int] = []
        self.sinces: list[int] = []
        self.stored = 0
        self.duplicates = 0
        self.announced = 0
        self.announced_ms: int | None = None
        self.last_commit_ms: int | None = None
        self.regressions = 0
        self.lost = 0
        self.closed_ms: int | None = None
        self.dirty = False

    @property
    def highest(self) -> int:
        return self.lasts[-1] if self.lasts else 0

    def contains(self, seq: int) -> bool:
        i = bisect_right(self.firsts, seq) - 1
        return i >= 0 and self.lasts[i] >= seq

    def gapless(self) -> bool:
        """No gap for certain: one interval from seq 1 (or none) and nothing announced above
        it - a stream without losses, the usual case (the periodic gap scans skip it)."""
        lasts = self.lasts
        if not lasts:
            return self.announced <= 0
        return len(lasts) == 1 and self.firsts[0] == 1 and self.announced <= lasts[0]

    def gaps(self, gateway_id: str, epoch: int = 0) -> list[Gap]:
        if self.gapless():
            return []
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
                out.append(Gap(gateway_id, below + 1, first - 1, since[i], epoch))
            below = lasts[i]
        if self.announced > below:
            out.append(Gap(gateway_id, below + 1, self.announced, self.announced_ms or 0, epoch))
        return out


@dataclass(slots=True)
class _Plan:
    """One gateway's part of a commit, computed before the transaction."""

    key: StreamKey
    state: _Seqs
    firsts: list[int]
    lasts: list[int]
    sinces: list[int]
    removed: set[int]
    upserts: dict[int, tuple[int, int]]
    added: int
    announced_ms: int | None


class SeqLedger:
    """Per-stream stored seqs, persisted in the SQLite file ``path``. Thread-safe.

    Methods take a gateway id and an ``epoch`` (0: a sender that does not say); commits take
    a mapping keyed by gateway id (epoch 0) or by ``(gateway id, epoch)``.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        private_file(self.path)  # gateway ids and their streams: owner only
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False,
                                     isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._migrate()
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._gw: dict[StreamKey, _Seqs] = {}
        self._current: dict[str, int] = {}
        self._resets: dict[str, int] = {}
        self._closed = False
        self._load()

    def _migrate(self) -> None:
        """A ledger written before epochs: its streams become epoch 0."""
        conn = self._conn
        cols = [r[1] for r in conn.execute("PRAGMA table_info(seq_intervals)")]
        if not cols or "epoch" in cols:
            return
        conn.executescript("""
            BEGIN IMMEDIATE;
            ALTER TABLE seq_intervals RENAME TO seq_intervals_v0;
            ALTER TABLE seq_gateways RENAME TO seq_gateways_v0;
            """ + _SCHEMA + """
            INSERT INTO seq_intervals SELECT gateway, 0, first, last, since_ms
                FROM seq_intervals_v0;
            INSERT INTO seq_streams (gateway, epoch, stored, duplicates, announced,
                                     announced_ms, last_commit_ms)
                SELECT gateway, 0, stored, duplicates, announced, announced_ms, last_commit_ms
                FROM seq_gateways_v0;
            DROP TABLE seq_intervals_v0;
            DROP TABLE seq_gateways_v0;
            COMMIT;
            """)

    def _load(self) -> None:
        newest: dict[str, tuple[int, int]] = {}  # gateway -> (last commit, epoch) of open ones
        for gw, epoch, stored, dups, announced, announced_ms, last_ms, regr, closed, lost in \
                self._conn.execute(
                    "SELECT gateway, epoch, stored, duplicates, announced, announced_ms, "
                    "last_commit_ms, regressions, closed_ms, lost FROM seq_streams"):
            st = self._gw[(gw, epoch)] = _Seqs()
            st.stored, st.duplicates, st.announced = stored, dups, announced
            st.announced_ms, st.last_commit_ms = announced_ms, last_ms
            st.regressions, st.closed_ms, st.lost = regr, closed, lost
            if closed is None and (gw not in newest or (last_ms or 0) >= newest[gw][0]):
                newest[gw] = (last_ms or 0, epoch)
        self._current = {gw: epoch for gw, (_, epoch) in newest.items()}
        for gw, n in self._conn.execute("SELECT gateway, count(*) FROM seq_resets "
                                        "GROUP BY gateway"):
            self._resets[gw] = n
        for gw, epoch, first, last, since in self._conn.execute(
                "SELECT gateway, epoch, first, last, since_ms FROM seq_intervals "
                "ORDER BY gateway, epoch, first"):
            st = self._gw.setdefault((gw, epoch), _Seqs())
            st.firsts.append(first)
            st.lasts.append(last)
            st.sinces.append(since)

    # -- epochs --------------------------------------------------------------------------------

    def current_epoch(self, gateway_id: str) -> int | None:
        """The gateway's current epoch; None for a gateway the ledger has not seen."""
        with self._lock:
            return self._current.get(gateway_id)

    def note_epoch(self, gateway_id: str, epoch: int, now_ms: int) -> Reset | None:
        """The gateway sent something in ``epoch``. A :class:`Reset` when that epoch is new
        for a gateway seen before in another one (saved at once: a reset is rare and must
        not be forgotten); None otherwise, also for a late message of an older epoch."""
        with self._lock:
            current = self._current.get(gateway_id)
            if current == epoch:
                return None
            if current is None:
                self._current[gateway_id] = epoch
                return None
            if (gateway_id, epoch) in self._gw:
                return None  # a late message of an epoch already known
            old = self._gw.get((gateway_id, current)) or _Seqs()
            gaps = old.gaps(gateway_id, current)
            reset = Reset(gateway_id, now_ms, current, epoch, max(old.highest, old.announced),
                          sum(g.missing for g in gaps))
            new = _Seqs()
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT OR REPLACE INTO seq_resets VALUES (?, ?, ?, ?, ?, ?)",
                             (gateway_id, now_ms, current, epoch, reset.old_highest,
                              reset.old_missing))
                self._save_stream((gateway_id, current), old, old.stored, old.announced_ms,
                                  old.last_commit_ms, now_ms)
                self._save_stream((gateway_id, epoch), new, 0, None, None, None)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            old.closed_ms = now_ms
            self._gw[(gateway_id, current)] = old
            self._gw[(gateway_id, epoch)] = new
            self._current[gateway_id] = epoch
            self._resets[gateway_id] = self._resets.get(gateway_id, 0) + 1
            return reset

    def resets(self, limit: int = 100) -> list[Reset]:
        """The newest resets first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT gateway, at_ms, old_epoch, new_epoch, old_highest, old_missing "
                "FROM seq_resets ORDER BY at_ms DESC, gateway LIMIT ?", (limit,)).fetchall()
        return [Reset(*r) for r in rows]

    # -- seqs ----------------------------------------------------------------------------------

    def fresh(self, gateway_id: str, seqs: Sequence[int], epoch: int = 0) -> list[bool]:
        """For each seq: True when it is not stored yet. Stored ones count as duplicates."""
        with self._lock:
            st = self._gw.get((gateway_id, epoch))
            if st is None or not st.lasts:
                return [True] * len(seqs)
            highest = st.highest
            out = [s > highest or not st.contains(s) for s in seqs]
            dups = len(out) - sum(out)
            if dups:
                st.duplicates += dups
                st.dirty = True
            return out

    def commit(self, gateway_id: str, seqs: Sequence[int], now_ms: int, epoch: int = 0
               ) -> None:
        """Record ``seqs`` as stored (after the sink wrote them). Idempotent.

        Raises ValueError for a seq below 1 and sqlite3.Error when the ledger cannot be
        saved; the in-memory state changes only after the transaction committed.
        """
        self.commit_many({(gateway_id, epoch): seqs}, now_ms)

    def mark_lost(self, gateway_id: str, first: int, last: int, now_ms: int, epoch: int = 0
                  ) -> int:
        """Seqs ``first..last`` will never come (the gateway said it no longer has them, or
        the gap outlived ``settle_older_than``): what of them is missing stops being a gap
        and is counted as lost. Returns how many seqs that was."""
        with self._lock:
            key = (gateway_id, epoch)
            st = self._gw.get(key)
            if st is None:
                return 0
            runs = [(max(g.first, first), min(g.last, last)) for g in st.gaps(gateway_id, epoch)
                    if g.first <= last and g.last >= first]
            return self._settle(key, st, runs, now_ms) if runs else 0

    def settle_older_than(self, before_ms: int, now_ms: int) -> list[Gap]:
        """Close every open gap that has been open since before ``before_ms`` as lost: the
        ledger's size stays bounded (a gateway with 100,000 scattered missing seqs is one
        interval again once they are settled), and a gap nobody can fill no longer waits
        for ever. Returns the gaps settled."""
        settled = [g for g in self.gaps() if g.since_ms < before_ms]
        streams: dict[StreamKey, list[tuple[int, int]]] = {}
        for g in settled:
            streams.setdefault((g.gateway_id, g.epoch), []).append((g.first, g.last))
        with self._lock:
            for key, runs in streams.items():  # one transaction per stream
                st = self._gw.get(key)
                if st is not None:
                    self._settle(key, st, runs, now_ms)
        return settled

    def _settle(self, key: StreamKey, st: _Seqs, runs: list[tuple[int, int]], now_ms: int
                ) -> int:
        plan = self._plan_runs(key, runs, now_ms)
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._write_plan(plan)
            self._save_stream(key, st, st.stored, plan.announced_ms, st.last_commit_ms,
                              st.closed_ms, st.lost + plan.added)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        st.lost += plan.added
        st.firsts, st.lasts, st.sinces = plan.firsts, plan.lasts, plan.sinces
        st.announced_ms = plan.announced_ms
        return plan.added

    def _write_plan(self, p: _Plan) -> None:
        gw, epoch = p.key
        self._conn.executemany(
            "DELETE FROM seq_intervals WHERE gateway = ? AND epoch = ? AND first = ?",
            [(gw, epoch, f) for f in p.removed - p.upserts.keys()])
        self._conn.executemany(
            "INSERT OR REPLACE INTO seq_intervals VALUES (?, ?, ?, ?, ?)",
            [(gw, epoch, f, last, since) for f, (last, since) in p.upserts.items()])

    def commit_many(self, commits: Mapping[StreamKey, Sequence[int]] | Mapping[str, Sequence[int]],
                    now_ms: int) -> None:
        """:meth:`commit` for several streams in **one** transaction (one fsync): the
        pipeline commits a whole write group at once. All or nothing. Keys are gateway ids
        (epoch 0) or ``(gateway id, epoch)``."""
        with self._lock:
            items: Iterable[tuple[str | StreamKey, Sequence[int]]] = commits.items()
            plans = [self._plan(_key(k), seqs, now_ms) for k, seqs in items]
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                for p in plans:
                    self._write_plan(p)
                    st = p.state
                    self._save_stream(p.key, st, st.stored + p.added, p.announced_ms, now_ms,
                                      st.closed_ms)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            for p in plans:
                st = p.state
                if p.key not in self._gw:
                    self._gw[p.key] = st
                    self._current.setdefault(p.key[0], p.key[1])
                st.firsts, st.lasts, st.sinces = p.firsts, p.lasts, p.sinces
                st.stored += p.added
                st.announced_ms = p.announced_ms
                st.last_commit_ms = now_ms
                st.dirty = False

    def _plan(self, key: StreamKey, seqs: Sequence[int], now_ms: int) -> _Plan:
        """The new intervals of one stream after committing ``seqs`` (copies; nothing
        changes until the transaction committed)."""
        st = self._gw.get(key) or _Seqs()
        return self._plan_runs(key, seq_ranges(s for s in seqs if not st.contains(s)), now_ms)

    def _plan_runs(self, key: StreamKey, runs: list[tuple[int, int]], now_ms: int) -> _Plan:
        """:meth:`_plan` for sorted runs of seqs none of which is stored yet."""
        st = self._gw.get(key) or _Seqs()
        if runs and runs[0][0] < 1:
            raise ValueError(f"{key[0]}: seq {runs[0][0]} is below 1")
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
        return _Plan(key, st, firsts, lasts, sinces, removed, upserts,
                     sum(b - a + 1 for a, b in runs),
                     st.announced_ms if st.announced > highest else None)

    def _save_stream(self, key: StreamKey, st: _Seqs, stored: int, announced_ms: int | None,
                     last_ms: int | None, closed_ms: int | None, lost: int | None = None
                     ) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO seq_streams VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key[0], key[1], stored, st.duplicates, st.announced, announced_ms, last_ms,
             st.regressions, closed_ms, st.lost if lost is None else lost))

    def note_last_seq(self, gateway_id: str, last_seq: int, now_ms: int, epoch: int = 0
                      ) -> bool:
        """The gateway reported ``last_seq`` (health): seqs above the stored ones up to it are
        a tail gap until they arrive. Saved with the next commit or on close. Returns True
        when it went backwards inside the epoch (counted as a regression: a store restored
        from an older copy hands out seqs again)."""
        with self._lock:
            key = (gateway_id, epoch)
            st = self._gw.get(key)
            if st is None:  # a gateway known only from its health is known after a restart
                st = self._gw[key] = _Seqs()
                st.dirty = True
                self._current.setdefault(gateway_id, epoch)
            regressed = 0 < last_seq < max(st.announced, st.highest)
            if regressed:
                st.regressions += 1
                st.dirty = True
            if last_seq > st.announced:
                st.announced = last_seq
                st.dirty = True
            if st.announced > st.highest and st.announced_ms is None:
                st.announced_ms = now_ms
                st.dirty = True
            return regressed

    def gaps(self, gateway_id: str | None = None) -> list[Gap]:
        """Open missing ranges below the highest seq stored or announced, by gateway and seq:
        those of each gateway's current epoch (a closed epoch's are in its :class:`Reset`)."""
        with self._lock:
            keys = sorted(k for k, st in self._gw.items()
                          if st.closed_ms is None and not st.gapless()
                          and (gateway_id is None or k[0] == gateway_id)
                          and self._current.get(k[0], k[1]) == k[1])
            return [g for k in keys for g in self._gw[k].gaps(k[0], k[1])]

    def stats(self) -> LedgerStats:
        """Per-gateway counts of its current epoch (see :class:`GatewaySeqStats`)."""
        with self._lock:
            out: dict[str, GatewaySeqStats] = {}
            for gw in sorted(self._current):
                epoch = self._current[gw]
                st = self._gw.get((gw, epoch)) or _Seqs()
                gaps = st.gaps(gw, epoch)
                out[gw] = GatewaySeqStats(gw, st.stored, st.duplicates, st.highest,
                                          st.announced, len(gaps),
                                          sum(g.missing for g in gaps), st.last_commit_ms,
                                          epoch, self._resets.get(gw, 0),
                                          sum(s.regressions for k, s in self._gw.items()
                                              if k[0] == gw), st.lost)
            return LedgerStats(out)

    def flush(self) -> None:
        """Save counters changed since the last commit (duplicates, announced seqs)."""
        with self._lock:
            dirty = [(key, st) for key, st in self._gw.items() if st.dirty]
            if not dirty:
                return
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for key, st in dirty:
                    self._save_stream(key, st, st.stored, st.announced_ms, st.last_commit_ms,
                                      st.closed_ms)
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


def _key(key: str | StreamKey) -> StreamKey:
    return (key, 0) if isinstance(key, str) else key
