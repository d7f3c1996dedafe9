"""The asyncio shell around :class:`~simulators.panel.engine.UitdEngine`.

Three tasks in the running loop:

* the **driver** calls :meth:`UitdEngine.poll` whenever the engine's next deadline comes (on the
  scenario clock), data arrived or an action was triggered, and queues what the engine returns;
* per connection, a **reader** feeds received bytes to the engine;
* per connection, a **writer** writes the transmissions in order, paced at the baud rate, with
  the idle gaps of split frames.

Usage (tests use a :class:`~simulators.panel.clock.ManualClock` or a fast ``ScaledClock``)::

    async with Panel(engine, PtyTransport(), ScaledClock(10), pace=9600) as panel:
        print(panel.address)           # /dev/pts/N: the agent opens this
        panel.trigger("fire_alarm", component="smoke-3F-east")
        await panel.wait_until(lambda: not panel.engine.pending)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .clock import Clock
from .engine import UitdEngine
from .faults import Transmission
from .link import Connection, Pacer, Transport
from .scenario import build_event
from .timeline import TimelineEvent

MAX_BACKLOG = 64  # transmissions waiting for a writer that cannot write (nobody reads the pty)


class Panel:
    """A running simulated UITD on one transport."""

    def __init__(self, engine: UitdEngine, transport: Transport, clock: Clock, *,
                 pace: int | None = None) -> None:
        self.engine = engine
        self.transport = transport
        self.clock = clock
        self.pacer = Pacer(pace)
        self.connection: Connection | None = None
        self.dropped = 0  # transmissions dropped because the writer was stuck
        self.bytes_written = 0
        self.on_connect: Callable[[Connection | None], None] | None = None
        self._wake = asyncio.Event()
        self._out: asyncio.Queue[Transmission] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        clock.subscribe(self._wake.set)

    @property
    def address(self) -> str:
        """The pty path, serial port or ``HOST:PORT``."""
        return self.transport.address

    async def __aenter__(self) -> Panel:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        await self.transport.start()
        self._tasks = [asyncio.create_task(self._drive(), name="panel-driver"),
                       asyncio.create_task(self._links(), name="panel-links")]

    async def stop(self) -> None:
        for task in self._tasks:
            await _cancel(task)
        self._tasks = []
        await self.transport.stop()
        self.engine.ledger.close()

    # -- API ---------------------------------------------------------------------------------

    def trigger(self, action: str, component: str | None = None, **params: Any) -> None:
        """Apply an action now, e.g. ``trigger("fire_alarm", component="smoke-3F-east")``.
        Parameters are those of the scenario's ``[[panel.events]]`` (validated the same way)."""
        table: dict[str, Any] = {"at": self.clock.now(), "action": action, **params}
        if component is not None:
            table["component"] = component
        self.apply(build_event(self.engine.config, table, f"trigger({action})"))

    def apply(self, event: TimelineEvent) -> None:
        """Apply a validated event now."""
        self._emit(self.engine.trigger(event, self.clock.now()))
        self._wake.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait (real seconds, polling every 10 ms) until ``predicate()`` holds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)

    # -- tasks -------------------------------------------------------------------------------

    def _emit(self, transmissions: list[Transmission]) -> None:
        if not transmissions:
            return
        if self._out is None:  # not connected: the engine produced nothing to say anyway
            return
        for tx in transmissions:
            if self._out.qsize() >= MAX_BACKLOG:
                self.dropped += 1
                continue
            self._out.put_nowait(tx)

    async def _drive(self) -> None:
        while True:
            self._wake.clear()
            self._emit(self.engine.poll(self.clock.now()))
            deadline = self.engine.next_deadline()
            delay = None if deadline is None else self.clock.real_delay(deadline)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that
            # arrives as the inner wait completes, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _links(self) -> None:
        async for conn in self.transport.connections():
            await self._serve(conn)

    async def _serve(self, conn: Connection) -> None:
        self.connection = conn
        self._out = asyncio.Queue()
        if self.on_connect is not None:
            self.on_connect(conn)
        writer = asyncio.create_task(self._write(conn, self._out), name="panel-writer")
        try:
            self._emit(self.engine.connect(self.clock.now()))
            self._wake.set()
            while True:
                data = await conn.read()
                if not data:
                    break
                self._emit(self.engine.receive(data, self.clock.now()))
                self._wake.set()
        finally:
            await _cancel(writer)
            self._out = None
            self.connection = None
            self.engine.disconnect(self.clock.now())
            self._wake.set()
            if self.on_connect is not None:
                self.on_connect(None)

    async def _write(self, conn: Connection, queue: asyncio.Queue[Transmission]) -> None:
        while True:
            tx = await queue.get()
            for k, part in enumerate(tx.parts):
                if self.engine.silent:  # a link loss began: nothing more leaves
                    break
                if k and tx.gap:
                    await asyncio.sleep(tx.gap)
                await self.pacer.send(conn, part)
                self.bytes_written += len(part)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it, without swallowing a cancellation of the caller."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
