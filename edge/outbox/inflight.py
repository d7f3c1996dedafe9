"""Which stored records are out with the uplink, and where each class's unsent rows begin.

A stored record is *pending*, *in flight* (handed out by ``next_batch``, its PUBACK not yet
in) or *sent* (the broker acknowledged it; it waits for the collector's ``stored``
confirmation, the deletion point). In flight and sent are both "out": ``next_batch`` skips
them. Both live in memory on purpose: after a restart the old MQTT session's PUBACKs are gone
and so are the confirmations published while the gateway was away (its subscription is a
clean session), so everything stored is pending again and goes out once more, which the
collector's de-duplication by (gateway, epoch, seq) makes harmless. A PUBACK therefore
costs no write at all; the only write of a delivered record is its delete.

A cursor per class keeps ``next_batch`` cheap on a large backlog: every row of class *p*
with ``seq <= cursor[p]`` is out or deleted, so a read starts past it on the
(priority, seq) index instead of skipping over everything already handed out. New rows
always get larger seqs; putting a record back to pending (``nack``, a confirmation timeout,
a ``resend`` command) lowers the cursor to below its seq, and the rows then re-read that
are still out are skipped by a dict lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import takewhile

import aiosqlite

from protocols.wire import Priority

from .model import StoredRecord
from .store import pending

__all__ = ["InFlight"]

_FIRE = Priority.FIRE
_PRIORITIES = tuple(Priority)


class InFlight:
    """The records that are out (in flight or sent), and the per-class cursors."""

    def __init__(self) -> None:
        self._seqs: dict[int, int] = {}  # seq -> priority: out (in flight or sent)
        self._sent: dict[int, float] = {}  # seq -> when marked sent; oldest first
        self._count = [0] * 4  # records out per class
        self._cursor = [0] * 4

    def __len__(self) -> int:
        """Records out: in flight plus sent."""
        return len(self._seqs)

    def out(self, priority: int) -> int:
        """Records of one class that are out (in flight or sent)."""
        return self._count[priority]

    @property
    def in_flight(self) -> int:
        return len(self._seqs) - len(self._sent)

    @property
    def sent(self) -> int:
        return len(self._sent)

    def oldest_sent(self) -> float | None:
        """When the longest-waiting sent record was marked sent; None when none waits."""
        return next(iter(self._sent.values()), None)

    async def take(
        self, db: aiosqlite.Connection, max_records: int, max_bytes: int
    ) -> list[StoredRecord]:
        """Read the next batch (see ``Outbox.next_batch``) and mark it in flight.

        Marking happens after the last await, so a caller cancelled mid-read leaves
        nothing marked; a ``nack``/``release_all`` that ran meanwhile keeps its lowered
        cursor.
        """
        out: list[StoredRecord] = []
        used = 0
        start = list(self._cursor)
        cursor = list(start)
        for p in _PRIORITIES:
            if out and out[0].priority is _FIRE:
                break  # fire alarms travel alone, in a small message
            full = False
            while not full:
                limit = max_records - len(out) + 16
                rows = list(await pending(db, p, cursor[p], limit))
                for seq, stored_ms, payload in rows:
                    if seq in self._seqs:
                        cursor[p] = seq
                        continue
                    extra = len(payload) + (1 if out else 0)  # a comma between records
                    if len(out) == max_records or (out and used + extra > max_bytes):
                        full = True
                        break
                    out.append(StoredRecord(seq, p, stored_ms, payload))
                    used += extra
                    cursor[p] = seq
                if len(rows) < limit:
                    break
            if full:
                break
        seqs, count = self._seqs, self._count
        for r in out:
            seqs[r.seq] = r.priority
            count[r.priority] += 1
        for i in range(4):
            if self._cursor[i] >= start[i]:
                self._cursor[i] = cursor[i]
        return out

    def mark_sent(self, seqs: Iterable[int], now: float) -> int:
        """In flight (or sent before) -> sent at ``now``; seqs no longer out (deleted, or
        put back to pending meanwhile) are skipped. Returns how many were marked."""
        out, sent = self._seqs, self._sent
        n = 0
        for seq in seqs:
            if seq in out:
                sent.pop(seq, None)  # a resend: it waits from now, at the end of the line
                sent[seq] = now
                n += 1
        return n

    def release(self, seqs: Iterable[int]) -> int:
        """Back to pending (nack, resend); returns how many were out."""
        n = 0
        for seq in seqs:
            p = self._seqs.pop(seq, None)
            if p is not None:
                self._sent.pop(seq, None)
                self._count[p] -= 1
                self._cursor[p] = min(self._cursor[p], seq - 1)
                n += 1
        return n

    def release_all(self) -> int:
        """Every record in flight back to pending (a new session: their PUBACKs are gone);
        sent records keep waiting for their confirmation. Returns how many."""
        sent = self._sent
        return self.release([s for s in self._seqs if s not in sent])

    def release_sent_before(self, cutoff: float) -> int:
        """Sent records marked at or before ``cutoff`` back to pending (their confirmation
        did not come); returns how many."""
        sent = self._sent
        return self.release([s for s, _ in takewhile(lambda i: i[1] <= cutoff, sent.items())])

    def release_sent_between(self, first: int, last: int) -> int:
        """Sent records with ``first <= seq <= last`` back to pending; returns how many."""
        sent = self._sent
        if last - first < len(sent):
            return self.release([s for s in range(first, last + 1) if s in sent])
        return self.release([s for s in sent if first <= s <= last])

    def forget(self, seqs: Iterable[int]) -> None:
        """The rows are gone (acked, confirmed, or deleted one by one)."""
        out, sent, count = self._seqs, self._sent, self._count
        for seq in seqs:
            p = out.pop(seq, None)
            if p is not None:
                sent.pop(seq, None)
                count[p] -= 1

    def forget_through(self, priority: int, through: int) -> None:
        """Every row of ``priority`` up to ``through`` is gone (eviction, expiry)."""
        self.forget([s for s, p in self._seqs.items() if p == priority and s <= through])
