"""One simulated UITD of the fleet: the panel simulator's sans-I/O engine on an asyncio
protocol, with timers on the shared event loop and no task of its own.

The :class:`~simulators.panel.engine.UitdEngine` is the whole UITD (uploads one at a time,
confirms, resends of the same bytes per §6.5.4/§6.5.5, answers to reads and controls, clock
sync, check-post); this class only moves bytes and time:

* it **dials** the centre (a UITD is the TCP client, the centre listens), and on a drop, a
  refused or failed dial dials again after a jittered back-off (:class:`common.backoff.Backoff`,
  equal jitter), so a fleet that lost its centre does not come back in one wave;
* every engine output is written at once, or on a **slow line** no sooner than its last byte
  would leave a UART at ``baud`` (10 bits a byte), as the panel simulator's pacer does;
* one ``loop.call_at`` handle per UITD wakes the engine at its next deadline (confirm timeout,
  periodic state, check-post answer);
* what the engine's ledger reports is counted into the fleet's :class:`~.ledger.FleetLedger`:
  uploads sent, confirmed, resent, failed, confirm latency (last transmission to confirm, loop
  time), the answers to the centre's commands, and every fire alarm as ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from common.backoff import Backoff
from simulators.panel import Transmission, UitdEngine
from simulators.panel.timeline import TimelineEvent

from .config import UitdIdentity
from .ledger import FireAlarm, FleetLedger

__all__ = ["SimUitd"]

PRESSURE = "pressure"
CONNECT_TIMEOUT = 10.0  # s for one dial


class _Link(asyncio.Protocol):
    """The TCP connection of one UITD; hands everything to its :class:`SimUitd`."""

    __slots__ = ("transport", "uitd")

    def __init__(self, uitd: SimUitd) -> None:
        self.uitd = uitd
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.uitd.link_up(self)

    def data_received(self, data: bytes) -> None:
        self.uitd.received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.uitd.link_lost(self)


class SimUitd:
    """A UITD dialing ``host:port``; driven by the fleet's loop."""

    def __init__(self, ident: UitdIdentity, engine: UitdEngine, ledger: FleetLedger, *,
                 host: str, port: int, origin: float, backoff: Backoff,
                 baud: int | None = None, announce: bool = True) -> None:
        self.ident = ident
        self.engine = engine
        self.ledger = ledger
        self.host, self.port = host, port
        self.origin = origin  # loop time at the engine's scenario time 0
        self.backoff = backoff
        self.byte_time = 10.0 / baud if baud else 0.0
        self.announce = announce
        self.loop = asyncio.get_running_loop()
        self.link: _Link | None = None
        self.alarmed: set[int] = set()  # detector numbers in (latched) alarm
        self.running = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._dial: asyncio.TimerHandle | asyncio.Task[Any] | None = None
        self._down_until = 0.0  # a planned drop keeps the line down until then
        self._busy_until = 0.0  # slow line: when the last queued byte leaves
        self._tx_at = 0.0  # loop time of the last upload transmission
        self._raising: tuple[int, str] | None = None  # the fire alarm being queued
        engine.ledger.on_record = self._on_record

    # -- time ---------------------------------------------------------------------------------

    def now(self) -> float:
        """The engine's scenario time."""
        return self.loop.time() - self.origin

    @property
    def connected(self) -> bool:
        return self.link is not None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Dial now, and keep the link up until :meth:`stop`."""
        self.running = True
        self._schedule()
        self._dial_now()

    def stop(self) -> None:
        """Close the link for good; no more dialing or timers."""
        self.running = False
        for handle in (self._timer, self._dial):
            if handle is not None:
                handle.cancel()
        self._timer = self._dial = None
        if self.link is not None and self.link.transport is not None:
            self.link.transport.abort()

    def drop(self, duration: float) -> bool:
        """Lose the link abruptly (RST, no goodbye) and stay off ``duration`` s."""
        if self.link is None or self.link.transport is None:
            return False
        self.ledger.count("drops")
        self._down_until = self.loop.time() + duration
        link = self.link
        assert link.transport is not None
        link.transport.abort()  # its connection_lost comes later and finds a stale link
        self.link_lost(link)
        return True

    def _dial_now(self) -> None:
        self._dial = self.loop.create_task(self._connect())

    def _redial(self, delay: float) -> None:
        if self.running:
            self._dial = self.loop.call_later(delay, self._dial_now)

    async def _connect(self) -> None:
        self.ledger.count("dials")
        try:
            # bounded: a centre that drops SYNs must not hold a UITD for the kernel's 2 minutes
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self.loop.create_connection(lambda: _Link(self), self.host, self.port)
        except (OSError, TimeoutError) as exc:
            self.ledger.count("dial_failed")
            errno = getattr(exc, "errno", None)
            why = os.strerror(errno).lower() if errno else "timed out"
            self.ledger.error(f"connect: {why}")
            self._redial(self.backoff.next())

    # -- the link's callbacks -------------------------------------------------------------------

    def link_up(self, link: _Link) -> None:
        if not self.running:
            assert link.transport is not None
            link.transport.abort()
            return
        self.link = link
        self.backoff.reset()
        self.ledger.count("connects")
        self._emit(self.engine.connect(self.now()))
        if self.announce:  # the centre learns who dialed from the first frame's address
            self._emit(self.engine.trigger(TimelineEvent(self.now(), "state"), self.now()))
        self._schedule()

    def received(self, link: _Link, data: bytes) -> None:
        if link is not self.link:  # pragma: no cover - a stale connection's late bytes
            return
        self.ledger.count("bytes_received", len(data))
        self._emit(self.engine.receive(data, self.now()))
        self._schedule()

    def link_lost(self, link: _Link) -> None:
        if link is not self.link:
            return
        self.link = None
        self.engine.disconnect(self.now())
        self._busy_until = 0.0
        if not self.running:
            return
        planned = self._down_until > self.loop.time()
        if not planned:
            self.ledger.count("lost")
        wait = max(0.0, self._down_until - self.loop.time())
        self._redial(wait + self.backoff.next())
        self._schedule()

    # -- engine ---------------------------------------------------------------------------------

    def act(self, event: TimelineEvent) -> None:
        """Apply a scenario action now (the fleet's bursts, resets, load)."""
        self._emit(self.engine.trigger(event, self.now()))
        self._schedule()

    def fire_alarm(self, detector: int) -> None:
        """Raise a fire alarm on a detector (nothing is uploaded if it is in alarm already:
        the alarm latches until a reset)."""
        self.alarmed.add(detector)
        now = self.now()
        label = self.engine.label(now).to_datetime()
        self._raising = (detector, label.isoformat() if label else "")
        try:
            self.act(TimelineEvent(now, "fire_alarm", component=f"smoke-{detector}"))
        finally:
            self._raising = None

    def reset(self) -> None:
        self.alarmed.clear()
        self.act(TimelineEvent(self.now(), "reset"))

    def analog(self, value: float) -> None:
        self.act(TimelineEvent(self.now(), "analog", component=PRESSURE, value=value,
                               analog_type=5))

    def _poll(self) -> None:
        self._timer = self._timer_at = None
        self._emit(self.engine.poll(self.now()))
        self._schedule()

    def _schedule(self) -> None:
        """One timer at the engine's next deadline."""
        if not self.running:
            return
        deadline = self.engine.next_deadline()
        when = None if deadline is None else self.origin + deadline
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = None if when is None else self.loop.call_at(when, self._poll)

    def _emit(self, transmissions: list[Transmission]) -> None:
        if not transmissions:
            return
        link = self.link
        if link is None or link.transport is None:  # pragma: no cover - engine is offline
            self.ledger.count("unsent", len(transmissions))
            return
        transport = link.transport
        for tx in transmissions:
            if not self.byte_time and len(tx.parts) == 1:
                transport.write(tx.parts[0])
                continue
            start = max(self.loop.time(), self._busy_until)
            offset = 0.0
            for part in tx.parts:
                offset += len(part) * self.byte_time
                self.loop.call_at(start + offset, _write, transport, part)
                offset += tx.gap
            self._busy_until = start + offset

    # -- the engine's ledger --------------------------------------------------------------------

    def _on_record(self, record: dict[str, Any]) -> None:
        event = record["event"]
        led = self.ledger
        if event in ("sent", "resent"):
            self._tx_at = self.loop.time()
            led.count("transmissions")
            led.count("uploads_sent" if event == "sent" else "resends")
        elif event == "confirmed":
            led.count("confirmed")
            now = self.loop.time()
            led.latency(now - self._tx_at, now)
        elif event == "queued":
            led.count("uploads")
            if record["action"] == "fire_alarm" and self._raising is not None:
                detector, time = self._raising
                led.fire_alarm(FireAlarm(self.ident, self.engine.ledger.get(record["entry"]),
                                         detector, time))
        elif event in ("failed", "requeued"):
            led.count(event)
        elif event in ("answered", "executed", "denied", "acknowledged"):
            led.count(f"{event}_{record.get('type_mark', record.get('command'))}")
        elif event in ("clock_synced", "check_post", "damaged"):
            led.count(event)


def _write(transport: asyncio.Transport, data: bytes) -> None:
    if not transport.is_closing():
        with contextlib.suppress(RuntimeError):
            transport.write(data)

