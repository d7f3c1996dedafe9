"""Shared pieces of the alarm tests: a clock the test moves, a notifier that records, events."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from collector.alarms.book import AlarmBook, Signal, event_signal
from collector.alarms.config import EscalationPolicy, EscalationStep
from collector.notify import Notification
from protocols.wire import Bus, Event, EventType, Source

NOW = 1_718_000_000_000
EPOCH = 0x1234_5678_9ABC_DEF0
SMOKE = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")
SMOKE_2 = Source("panel/2-1/42-0x00000007", Bus.GB26875)
PUMP = Source("panel/1-1/87-0x00000065", Bus.GB26875, description="喷淋泵")
SYSTEM = Source("panel/1-1/system", Bus.GB26875)
FIRE = EscalationPolicy("fire", frozenset({"fire_alarm"}), steps=(
    EscalationStep(0, ("duty",)), EscalationStep(60, ("maintenance", "fire-station"))))
FAULTS = EscalationPolicy("faults", frozenset({"fault", "gateway_offline"}), sites=("north-*",),
                          until="ack_or_clear", steps=(EscalationStep(30, ("duty",)),
                                                      EscalationStep(600, ("maintenance",))))


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Sent:
    """Stands for the durable webhook queue: records what the book queued."""

    def __init__(self) -> None:
        self.notes: list[Notification] = []
        self.fail = False

    def __call__(self, notes: Sequence[Notification]) -> int:
        if self.fail:
            raise OSError("disk full")
        self.notes += notes
        return len(notes)

    @property
    def keys(self) -> list[str]:
        return [n.key for n in self.notes]


def ev(src: Source, kind: EventType, seq: int, active: bool = True, **kw: object) -> Event:
    return Event(source=src, type=kind, receive_ms=NOW - 500 + seq, seq=seq, active=active,
                 **kw)  # type: ignore[arg-type]


def sig(src: Source, kind: EventType, seq: int, active: bool = True, *, gateway: str = "gw-1",
        site: str = "north-1", epoch: int = EPOCH, **kw: object) -> Signal:
    s = event_signal(gateway, site, ev(src, kind, seq, active, **kw), epoch)
    assert s is not None
    return s


def book(path: Path, clock: Clock, sent: Sent | None = None,
         policies: Sequence[EscalationPolicy] = (FIRE, FAULTS), **kw: object) -> AlarmBook:
    return AlarmBook(path / "alarms.sqlite", policies, notify=sent, clock=clock,
                     ack_url_base="https://fire.example.net", **kw)  # type: ignore[arg-type]
