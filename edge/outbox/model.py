"""What the outbox hands out: stored records for the uplink and statistics for health."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from protocols.wire import Priority

__all__ = ["BATCH_HEAD_MAX", "OutboxStats", "Resent", "StoredRecord"]

BATCH_HEAD_MAX = 256
"""Bytes a batch needs besides its records: ``{"v":1,"gw":<64>,"site":<64>,"ts":<16
digits>,"recs":[`` ... ``]}`` is at most 185. ``next_batch``'s default byte budget is
``MAX_PAYLOAD_BYTES - BATCH_HEAD_MAX``, so its records always fit one payload."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A committed record, as the uplink sends it.

    ``encoded`` is exactly what :func:`protocols.wire.encode_record` produced at commit
    time; :func:`protocols.wire.encode_batch_from_encoded` joins these into a payload
    without decoding or re-encoding anything.
    """

    seq: int
    priority: Priority
    stored_ms: int
    encoded: bytes


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A snapshot for the health report and the technician's tools."""

    depth: Mapping[Priority, int]
    """Records stored, per class: pending, in flight and sent (awaiting confirmation)."""
    payload_bytes: int
    """Stored payload bytes (what ``max_bytes`` caps)."""
    in_flight: int
    """Handed out by ``next_batch``, their PUBACK not yet in (not sent, not released)."""
    oldest_age_s: float | None
    """Age of the oldest stored record; None when empty."""
    evicted: Mapping[Priority, int]
    """Records dropped, per class, since the database was created: cap, full disk and age."""
    expired: Mapping[Priority, int]
    """The part of ``evicted`` that was dropped for age."""
    errors: Mapping[str, int]
    """Storage errors since open, by :class:`edge.outbox.ErrorReason` value."""
    last_seq: int
    """Highest seq committed so far (0: none yet)."""
    epoch: int
    """The store's epoch (made with the database file)."""
    file_bytes: int
    """Database plus WAL on disk."""
    reserve_ok: bool
    """The emergency reserve file is in place (False after a full disk used it)."""
    disk_full: bool
    """The disk filled up: the file is held at its size, measurements give way, until
    maintenance finds room again."""
    sent_unconfirmed: int = 0
    """Acknowledged by the broker (``mark_sent``), still stored until the collector
    confirms them (``confirm``); part of ``depth``."""
    oldest_unconfirmed_s: float | None = None
    """How long the longest-waiting sent record has waited for its confirmation."""
    foreign_confirms: int = 0
    """Confirmations of another epoch, ignored, since the outbox was opened."""

    @property
    def pending(self) -> int:
        """Records waiting to be sent (stored, neither in flight nor sent)."""
        return self.total_depth - self.in_flight - self.sent_unconfirmed

    @property
    def total_depth(self) -> int:
        return sum(self.depth.values())

    def evicted_by_label(self) -> dict[str, int]:
        """``evicted`` keyed the way ``Health.evicted`` wants it (``"measurement"``)."""
        return {p.label: n for p, n in self.evicted.items()}


@dataclass(frozen=True, slots=True)
class Resent:
    """What ``Outbox.resend`` did with a range of seqs: ``resent`` records still held are
    pending again (or were already pending or in flight); ``missing`` are the ``(first,
    last)`` runs the outbox no longer has (confirmed, evicted, or never of this epoch)."""

    resent: int
    missing: tuple[tuple[int, int], ...]
