"""Which stored records are out with the uplink, and where each class's unsent rows begin.

In-flight state lives in memory on purpose: after a restart nothing is in flight (the old
MQTT session's PUBACKs are gone), so everything stored is pending again - which is exactly
"not deleted before the far end confirmed".

A cursor per class keeps ``next_batch`` cheap on a large backlog: every row of class *p*
with ``seq <= cursor[p]`` is in flight or deleted, so a read starts past it on the
(priority, seq) index instead of skipping over everything already handed out. New rows
always get larger seqs; ``nack`` lowers the cursor to below the released seq, and the
rows then re-read that are still in flight are skipped by a set lookup.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiosqlite

from protocols.wire import Priority

from .model import StoredRecord
from .store import pending

__all__ = ["InFlight"]

_FIRE = Priority.FIRE
_PRIORITIES = tuple(Priority)


class InFlight:
    def __init__(self) -> None:
        self._seqs: dict[int, int] = {}  # seq -> priority
        self._cursor = [0] * 4

    def __len__(self) -> int:
        return len(self._seqs)

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
        for r in out:
            self._seqs[r.seq] = r.priority
        for i in range(4):
            if self._cursor[i] >= start[i]:
                self._cursor[i] = cursor[i]
        return out

    def release(self, seqs: Iterable[int]) -> None:
        """Back to pending (nack)."""
        for seq in seqs:
            p = self._seqs.pop(seq, None)
            if p is not None:
                self._cursor[p] = min(self._cursor[p], seq - 1)

    def release_all(self) -> int:
        n = len(self._seqs)
        self._seqs.clear()
        self._cursor = [0] * 4
        return n

    def forget(self, seqs: Iterable[int]) -> None:
        """The rows are gone (acked, or deleted one by one)."""
        for seq in seqs:
            self._seqs.pop(seq, None)

    def forget_through(self, priority: int, through: int) -> None:
        """Every row of ``priority`` up to ``through`` is gone (eviction, expiry)."""
        for seq in [s for s, p in self._seqs.items() if p == priority and s <= through]:
            del self._seqs[seq]
