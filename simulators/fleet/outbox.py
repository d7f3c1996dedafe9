"""A simulated gateway's outbox: records waiting for the broker, drained by priority class.

The order is the one the wire contract gives the edge outbox: fire alarms first (GB 26875.1
§4.1.2.3: fire alarm information pre-empts all other transmission), then alarms, events and
measurements; within a class, oldest seq first. Records whose message was in flight when the
link dropped come back with :meth:`FleetOutbox.put_back` and are remembered, so the ledger can
say they were sent twice (the broker may have forwarded the first copy before the link died).
Not the edge agent's :class:`edge.outbox.Outbox`: nothing here is stored on disk.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter

from protocols.wire import Record

__all__ = ["FleetOutbox"]

_SEQ = attrgetter("seq")


class FleetOutbox:
    """Unbounded (a simulator keeps everything; the ledger must account for every record)."""

    __slots__ = ("_queues", "_requeued", "_size")

    def __init__(self) -> None:
        # One list per Priority value, each in seq order.
        self._queues: tuple[list[Record], ...] = ([], [], [], [])
        self._size = 0
        self._requeued: set[int] = set()

    def __len__(self) -> int:
        return self._size

    def add(self, records: Iterable[Record]) -> None:
        """Append new records (their seqs are higher than any already here)."""
        queues = self._queues
        n = 0
        for r in records:
            queues[r.priority].append(r)
            n += 1
        self._size += n

    def take(self, n: int) -> list[Record]:
        """Remove and return up to ``n`` records: lowest priority class first, then by seq."""
        out: list[Record] = []
        for q in self._queues:
            if len(out) >= n:
                break
            if q:
                k = min(n - len(out), len(q))
                out += q[:k]
                del q[:k]
        self._size -= len(out)
        return out

    def put_back(self, records: Iterable[Record]) -> None:
        """Return records whose message was not acknowledged; they go out again in order."""
        touched: set[int] = set()
        for r in records:
            self._queues[r.priority].append(r)
            self._requeued.add(r.seq)
            self._size += 1
            touched.add(r.priority)
        for p in touched:
            self._queues[p].sort(key=_SEQ)

    def resent(self, records: Iterable[Record]) -> list[int]:
        """The seqs among ``records`` (just taken) that were put back before: a second send."""
        if not self._requeued:
            return []
        again = [r.seq for r in records if r.seq in self._requeued]
        self._requeued.difference_update(again)
        return again

    def alarms(self) -> int:
        """Waiting records of the fire and alarm classes."""
        return len(self._queues[0]) + len(self._queues[1])

    def seqs(self) -> list[int]:
        """Every waiting seq (for the catch-up record in the ledger)."""
        return [r.seq for q in self._queues for r in q]

    def oldest_ms(self) -> int | None:
        """Receive time of the oldest waiting record."""
        heads = [q[0].receive_ms for q in self._queues if q]
        return min(heads) if heads else None
