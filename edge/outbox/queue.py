"""What waits for the committer: append and ack requests, and the events that wake it.

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


@dataclass(slots=True)
class AckRequest:
    seqs: frozenset[int]
    future: asyncio.Future[int]
    arrived: float


@dataclass(slots=True)
class Queue:
    """Requests waiting for the committer, and the events that wake it."""

    config: OutboxConfig
    appends: list[AppendRequest] = field(default_factory=list)
    acks: list[AckRequest] = field(default_factory=list)
    records: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Something arrived (the committer may be idle)."""
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    """Commit now: a fire alarm, a full group, or closing."""
    room: asyncio.Event = field(default_factory=asyncio.Event)
    """Fewer than ``max_queued_records`` wait: ``submit`` may queue more."""

    def __post_init__(self) -> None:
        self.room.set()

    def put_append(self, request: AppendRequest) -> None:
        self.appends.append(request)
        self.records += len(request.records)
        self.wake.set()
        if request.urgent or self.records >= self.config.max_group_records:
            self.kick.set()
        if self.records >= self.config.max_queued_records:
            self.room.clear()

    def put_ack(self, request: AckRequest) -> None:
        self.acks.append(request)
        self.wake.set()

    def __bool__(self) -> bool:
        return bool(self.appends or self.acks)

    def urgent(self) -> bool:
        return any(a.urgent for a in self.appends)

    def first_arrival(self) -> float:
        return min([a.arrived for a in self.appends[:1]] + [a.arrived for a in self.acks[:1]])

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
        if self.records < self.config.max_queued_records:
            self.room.set()
        acks, self.acks = self.acks, []
        if not self.appends:
            self.kick.clear()
        return group, acks
