"""The link-fault reporter of a panel driver: one raise and one clear per outage, durable.

The driver says when the line is lost (:meth:`LinkFault.lost`: a port that cannot be opened,
errors or vanishes, or no valid frame for ``silence_timeout_s``) and when valid frames flow again
(:meth:`LinkFault.restored`). :meth:`LinkFault.run` is the only emitter of the link's
``link_fault`` events: it reports the wanted state whenever it changes, and retries while the
outbox refuses, so an outage is one raise and one clear, never two, and never lost.
"""

from __future__ import annotations

import asyncio

from edge.drivers.base import DriverContext, EmitRefused
from protocols.wire import Event, EventType, Source

__all__ = ["LinkFault"]

_RETRY = 1.0  # s before an event the outbox refused is offered again


class LinkFault:
    """The ``link_fault`` condition of one panel link (``source``)."""

    def __init__(self, source: Source, ctx: DriverContext, *, raised: bool = False) -> None:
        """``raised``: the fault was still raised when the agent last stopped; the link is down
        until frames flow, so a failed first open raises nothing new."""
        self.source, self.ctx = source, ctx
        self._wanted = self._reported = raised
        self._detail = ""
        self._changed = asyncio.Event()

    @property
    def wanted(self) -> bool:
        """Whether the fault should be raised now (reported or not yet)."""
        return self._wanted

    def lost(self, detail: str) -> None:
        """The line is down (``detail`` says why): raise the fault unless it is already."""
        if not self._wanted:
            self._wanted, self._detail = True, detail
            self._changed.set()

    def restored(self) -> None:
        """Valid frames arrive: clear the fault if it is raised."""
        if self._wanted:
            self._wanted = False
            self._changed.set()

    async def run(self) -> None:
        """Report every change of the wanted state until durable; runs until cancelled."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            while self._wanted != self._reported:
                active = self._wanted
                event = Event(source=self.source, type=EventType.LINK_FAULT, active=active,
                              receive_ms=self.ctx.now_ms(),
                              detail=(self._detail if active
                                      else "恢复 restored: valid frames from the UITD")[:256])
                try:
                    await self.ctx.emit([event])
                except EmitRefused:  # keep the state, try again shortly
                    self.ctx.counters.inc("emit_failed")
                    await asyncio.sleep(_RETRY)
                    continue
                self._reported = active
