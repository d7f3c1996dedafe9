"""What every driver gets and gives: the two small interfaces between field buses and the rest.

A driver turns one field bus (a panel's serial line, an RS-485 bus, the BLE radio) into
normalized records (:mod:`protocols.wire.records`). It never imports the outbox, MQTT or
the collector: it is handed a :class:`DriverContext` whose ``emit`` returns once the records
are durable, and it reports what went wrong as counters by reason and link states.

Two shapes of driver share :class:`Driver`: *streaming* ones (the panel, BLE) that react to
what arrives, and *polled* ones (Modbus) that ask on a schedule. Both are one coroutine,
``run()``, that lives until it is cancelled and never ends because a field device misbehaved:
a bad frame, a silent device or an unplugged port is counted, reported as an event when it
matters to a person, and retried with back-off.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from protocols.wire import Command, CommandName, JsonValue, LinkState, Record

__all__ = [
    "CommandError",
    "CommandHandler",
    "Counters",
    "Driver",
    "DriverContext",
    "Emit",
    "EmitRefused",
    "LinkBoard",
    "LinkInfo",
    "wall_ms",
]

Emit = Callable[[Sequence[Record]], Awaitable[None]]
"""Hand records (``seq=0``) to the pipeline; returns once they are committed to the outbox.

The panel driver confirms a GB/T 26875.3 upload (command 3) only after this returns, so a
frame the panel was told we received is on disk. It raises :class:`EmitRefused` when the
records could not be stored; a panel driver then denies or stays silent so the panel resends.
"""

CommandHandler = Callable[[Command], Awaitable[Mapping[str, JsonValue]]]
"""Runs one downward command; returns the ack's ``result``, raises :class:`CommandError`."""


class CommandError(Exception):
    """A command that could not be carried out; the message goes to the ack's ``error``."""


def wall_ms() -> int:
    """Wall-clock milliseconds since the epoch (``receive_ms`` of records)."""
    return time.time_ns() // 1_000_000


class Counters:
    """Counters by reason for one driver (``bad_checksum``, ``timeout``, ``exception_2``...).

    Reported in health data (``Health.counters[driver]``) and by ``firegate status``. Reasons
    are short snake_case words, stable across versions: dashboards key on them.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def inc(self, reason: str, n: int = 1) -> None:
        self._counts[reason] = self._counts.get(reason, 0) + n

    def get(self, reason: str) -> int:
        return self._counts.get(reason, 0)

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)


@dataclass(frozen=True, slots=True)
class LinkInfo:
    state: LinkState
    since_ms: int
    detail: str | None = None


class LinkBoard:
    """The state of every link the gateway has: panel lines, buses, devices, the uplink.

    Names are the health report's link names: ``panel/com1``, ``modbus/bus1``,
    ``modbus/bus1/3``, ``ble``, ``uplink``. Setting the same state again keeps ``since_ms``.
    """

    __slots__ = ("_links",)

    def __init__(self) -> None:
        self._links: dict[str, LinkInfo] = {}

    def set(self, name: str, up: bool, detail: str | None = None, *, now_ms: int | None = None
            ) -> bool:
        """Record a link state; returns True when it changed."""
        state = LinkState.UP if up else LinkState.DOWN
        old = self._links.get(name)
        if old is not None and old.state is state:
            if detail != old.detail:
                self._links[name] = LinkInfo(state, old.since_ms, detail)
            return False
        self._links[name] = LinkInfo(state, wall_ms() if now_ms is None else now_ms, detail)
        return True

    def get(self, name: str) -> LinkInfo | None:
        return self._links.get(name)

    def remove(self, name: str) -> None:
        self._links.pop(name, None)

    def snapshot(self) -> dict[str, LinkInfo]:
        return dict(self._links)


class EmitRefused(Exception):
    """``emit`` did not make the records durable: none of them is stored (the outbox is full,
    broken or closing). Raised by the pipeline in place of the outbox's own errors, so a
    driver can tell this from a bug without importing the outbox. The driver keeps what it
    owes and tries again: a panel withholds its confirm (the UITD resends), a Modbus or BLE
    condition stays unreported until the next poll or advert. ``reason`` is the outbox's
    counter name (``full``, ``corrupt``, ``closed``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class DriverContext:
    """Everything a driver may touch outside its own bus."""

    gateway_id: str
    emit: Emit
    counters: Counters = field(default_factory=Counters)
    links: LinkBoard = field(default_factory=LinkBoard)
    now_ms: Callable[[], int] = wall_ms
    submit: Emit | None = None
    """Like ``emit``, for sources nobody waits on (a Modbus poll, a BLE advert): returns once
    any *events* among the records are durable, but readings alone are only queued and
    share a commit with the next ones (``OutboxConfig.submit_window_s``); the pipeline
    counts readings it then fails to store. None: ``emit``. Call :meth:`emit_readings`."""
    previous: frozenset[tuple[str, str]] = frozenset()
    """Conditions (source id, event type) that were raised and not restored when the agent
    last stopped, however it stopped. A driver seeds its state with the ones of its own
    sources, so a condition that cleared while the agent was down gets its restore event
    (and one still active is not raised twice)."""

    async def emit_readings(self, records: Sequence[Record]) -> None:
        """``submit`` if the pipeline offers it, else ``emit`` (see ``submit``)."""
        await (self.submit or self.emit)(records)

    def previous_of(self, source_id: str) -> set[str]:
        """The event types still raised for ``source_id`` at the last stop."""
        return {t for sid, t in self.previous if sid == source_id}


class Driver(Protocol):
    """One field bus; ``name`` is unique in the gateway (``panel/com1``, ``modbus/bus1``)."""

    @property
    def name(self) -> str: ...

    async def run(self) -> None:
        """Serve the bus until cancelled. Field errors are counted and retried, never raised."""
        ...

    def commands(self) -> Mapping[CommandName, CommandHandler]:
        """The downward commands this driver carries out (may be empty)."""
        ...
