"""A simulated gateway's outbox: records waiting to be sent, drained by priority class, and
(when the collector's confirmation is the deletion point) records sent and not yet confirmed.

The order is the one the wire contract gives the edge outbox: fire alarms first (GB 26875.1
§4.1.2.3: fire alarm information pre-empts all other transmission), then alarms, events and
measurements; within a class, oldest seq first. Records whose message was in flight when the
link dropped come back with :meth:`FleetOutbox.put_back` and are remembered, so the ledger can
say they were sent twice (the broker may have forwarded the first copy before the link died).

Delivered means stored (docs/wire-protocol.md, "Stored"): a gateway that waits for the
collector keeps a record after its PUBACK (:meth:`FleetOutbox.mark_sent`), deletes it when a
confirmation names it (:meth:`FleetOutbox.confirm`), and sends it again when it stays
unconfirmed for the confirm timeout (:meth:`FleetOutbox.expire`). A confirmation may name a
record that is waiting (sent again after a timeout) or in flight (the collector was quicker
than the PUBACK): such records are dropped when they are next touched.

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

    __slots__ = ("_confirmed", "_queues", "_requeued", "_sent", "_size")

    def __init__(self) -> None:
        # One list per Priority value, each in seq order.
        self._queues: tuple[list[Record], ...] = ([], [], [], [])
        self._size = 0
        self._requeued: set[int] = set()
        self._sent: dict[int, tuple[Record, float]] = {}
        """Sent (PUBACKed) and not yet confirmed: seq -> (record, PUBACK time). In PUBACK
        order (a dict keeps its insertion order), so the oldest are the first to time out;
        only what waits for a confirmation is kept, nothing of what was confirmed."""
        self._confirmed: set[int] = set()
        """Confirmed while waiting or in flight: dropped when next taken, put back or sent."""

    def __len__(self) -> int:
        """Records waiting to be sent (an upper bound: a few may be confirmed already)."""
        return self._size

    @property
    def held(self) -> int:
        """Records the gateway still holds: waiting, and sent but unconfirmed."""
        return self._size + len(self._sent)

    @property
    def unconfirmed(self) -> int:
        """Records sent (PUBACKed) and waiting for the collector's confirmation."""
        return len(self._sent)

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
        if self._confirmed:
            out = self._drop_confirmed(out)
        return out

    def put_back(self, records: Iterable[Record]) -> None:
        """Return records whose message was not acknowledged (or whose confirmation did not
        come in time); they go out again in order."""
        touched: set[int] = set()
        for r in self._drop_confirmed(records) if self._confirmed else records:
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

    # -- waiting for the collector -----------------------------------------------------------

    def mark_sent(self, records: Iterable[Record], now: float) -> None:
        """The broker acknowledged these records: keep them until confirmed (or timed out)."""
        if self._confirmed:
            records = self._drop_confirmed(records)
        sent = self._sent
        for r in records:
            sent[r.seq] = (r, now)

    def confirm(self, seqs: Iterable[int]) -> None:
        """The collector stored ``seqs`` (each held by this outbox and not confirmed before):
        delete them, sent or not."""
        sent, confirmed = self._sent, self._confirmed
        for seq in seqs:
            if sent.pop(seq, None) is None:
                confirmed.add(seq)  # waiting or in flight: dropped when next touched

    def expire(self, now: float, timeout: float) -> int:
        """Put back what was sent ``timeout`` seconds ago or more and is still unconfirmed;
        returns how many records that is."""
        sent = self._sent
        again: list[Record] = []
        for r, acked in sent.values():
            if acked + timeout > now:
                break
            again.append(r)
        for r in again:
            del sent[r.seq]
        if again:
            self.put_back(again)
        return len(again)

    def _drop_confirmed(self, records: Iterable[Record]) -> list[Record]:
        out = []
        confirmed = self._confirmed
        for r in records:
            if r.seq in confirmed:
                confirmed.discard(r.seq)
                self._requeued.discard(r.seq)  # not sent again after all
            else:
                out.append(r)
        return out

    # -- figures ------------------------------------------------------------------------------

    def alarms(self) -> int:
        """Waiting records of the fire and alarm classes."""
        return len(self._queues[0]) + len(self._queues[1])

    def seqs(self) -> list[int]:
        """Every waiting seq (for the catch-up record in the ledger)."""
        return [r.seq for q in self._queues for r in q if r.seq not in self._confirmed]

    def oldest_ms(self) -> int | None:
        """Receive time of the oldest record held (waiting, or sent and unconfirmed)."""
        heads = [q[0].receive_ms for q in self._queues if q]
        if self._sent:
            heads.append(min(r.receive_ms for r, _ in self._sent.values()))
        return min(heads) if heads else None
