"""What waits for the committer: append and ack (delete) requests, and the events that
wake it.

Requests are plain futures: the committer resolves each with its result or its typed error,
so an error reaches exactly the caller whose records it concerns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from protocols.wire import Event, Measurement, Record

from .config import OutboxConfig

__all__ = ["AckRequest", "AppendRequest", "Queue", "checked"]


def checked(records: Iterable[Record]) -> tuple[Record, ...]:
    """The records as a tuple, refusing what must never be stored."""
    batch = tuple(records)
    for r in batch:
        if r.__class__ is not Event and r.__class__ is not Measurement:
            raise TypeError(f"expected Event or Measurement, got {type(r).__name__}")
        if r.seq != 0:
            # Appending a numbered record again would send it twice under two seqs.
            raise ValueError(f"record already numbered (seq {r.seq})")
    return batch


@dataclass(slots=True)
class AppendRequest:
    records: tuple[Record, ...]
    future: asyncio.Future[list[Record]]
    arrived: float
    urgent: bool
    waited: bool = True
    """A caller awaits the commit (``append``); False for ``submit``."""


@dataclass(slots=True)
class AckRequest:
    """Deletes for the committer: ``seqs`` (``ack``, after a PUBACK) or ``ranges`` of seqs
    (``confirm``, a collector's ``stored``); resolved with how many of them were deleted."""

    seqs: frozenset[int]
    future: asyncio.Future[int]
    arrived: float
    ranges: tuple[tuple[int, int], ...] = ()


@dataclass(slots=True)
class Queue:
    """Requests waiting for the committer, and the events that wake it."""

    config: OutboxConfig
    appends: list[AppendRequest] = field(default_factory=list)
    acks: list[AckRequest] = field(default_factory=list)
    records: int = 0
    waiting: int = 0
    """Queued appends whose caller awaits the commit (``waited``)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Something arrived (the committer may be idle)."""
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    """Look again: a fire alarm, a full group, closing, or a request whose window ends
    sooner than the committer's current wait."""
    room: asyncio.Event = field(default_factory=asyncio.Event)
    """Fewer than ``max_queued_records`` wait: ``submit`` may queue more."""

    def __post_init__(self) -> None:
        self.room.set()

    def put_append(self, request: AppendRequest) -> None:
        sooner = request.waited and not (self.waiting or self.acks)
        self.appends.append(request)
        self.records += len(request.records)
        self.waiting += request.waited
        self.wake.set()
        if request.urgent or sooner or self.records >= self.config.max_group_records:
            self.kick.set()
        if self.records >= self.config.max_queued_records:
            self.room.clear()

    def put_ack(self, request: AckRequest) -> None:
        sooner = not (self.waiting or self.acks)
        self.acks.append(request)
        self.wake.set()
        if sooner:
            self.kick.set()

    def __bool__(self) -> bool:
        return bool(self.appends or self.acks)

    def urgent(self) -> bool:
        return any(a.urgent for a in self.appends)

    def due(self) -> float:
        """When the queued requests must be committed (loop time): the earliest arrival
        plus its window, ``commit_window_s`` for a waiting caller or an ack,
        ``submit_window_s`` for submitted records."""
        short, long = self.config.commit_window_s, self.config.submit_window_s
        times = [a.arrived + (short if a.waited else long) for a in self.appends]
        if self.acks:
            times.append(self.acks[0].arrived + short)
        return min(times)

    def take(self) -> tuple[list[AppendRequest], list[AckRequest]]:
        """The next group, and all acks. When fire alarms wait, the group is only their
        appends: a small transaction that costs one fsync and little CPU, instead of a
        seat in a large group whose encoding and inserts it would wait for. Otherwise
        appends in arrival order up to ``max_group_records`` (at least one, however large).
        """
        limit = self.config.max_group_records
        urgent = [a for a in self.appends if a.urgent]
        group: list[AppendRequest] = []
        n = 0
        for a in urgent or self.appends:
            if not group or n + len(a.records) <= limit:
                group.append(a)
                n += len(a.records)
        taken = {id(a) for a in group}
        self.appends = [a for a in self.appends if id(a) not in taken]
        self.records -= n
        self.waiting -= sum(a.waited for a in group)
        if self.records < self.config.max_queued_records:
            self.room.set()
        acks, self.acks = self.acks, []
        if not self.appends:
            self.kick.clear()
        return group, acks
