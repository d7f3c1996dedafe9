"""The path every record takes from a driver to the outbox: rules, then storage, then the view.

``Pipeline.emit`` is the ``DriverContext.emit`` of every driver. It applies the local rules
(thresholds, deadband), appends what remains to the outbox (numbered and durable when the
call returns: the panel driver confirms a frame only then), and notes the stored records for
the technician's local view. A fire alarm goes through the same path: the rules pass events
through untouched and the outbox commits a fire alarm without waiting for company.

``Pipeline.submit`` is the same path for sources nobody waits on (Modbus polls, BLE adverts):
when what remains after the rules is readings only, they are queued for the outbox's next
commit without waiting for its fsync (``OutboxConfig.submit_window_s``, 250 ms), so 1,000
readings/s cost a few commits a second instead of one per poll. Events among them (a
threshold the rules raised, a sensor going offline) still wait for durability. A reading not
yet committed when the power fails is lost like a poll not yet made (the device still holds
the value; nobody was told it was stored); one the outbox refuses is counted
``measurements_not_stored``.

``run_rules_clock`` is the task that lets a debounced threshold mature when no new sample
arrives (a sensor read once a minute still alarms ``debounce_s`` after the crossing).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence

from edge.drivers.base import Counters, EmitRefused, wall_ms
from edge.outbox import Outbox, OutboxClosed, OutboxError
from edge.rules import RuleEngine
from edge.state import StateWriter
from protocols.wire import Event, EventType, Measurement, Record

__all__ = ["POINT_EVENTS", "Pipeline"]

log = logging.getLogger("edge.pipeline")

POINT_EVENTS = frozenset({EventType.OPERATION, EventType.RESET, EventType.CHECK_POST})
"""Events that happen at a point in time (always ``active``), as opposed to conditions that
are raised and later restored."""


class Pipeline:
    def __init__(self, outbox: Outbox, rules: RuleEngine, state: StateWriter,
                 counters: Counters | None = None,
                 conditions: set[tuple[str, str]] | None = None) -> None:
        self.outbox = outbox
        self.rules = rules
        self.state = state
        self.counters = counters if counters is not None else rules.counters
        self._wake = asyncio.Event()
        self._last_active = rules.active
        self._retry: list[Record] = []
        self.conditions: set[tuple[str, str]] = set(conditions or ())
        """Raised and not restored, as stored: (source id, event type)."""
        # Threshold events the rules already decided on but the outbox refused: the rule has
        # flipped, so they would never be produced again. Kept (bounded by the number of
        # rules) and stored by the clock task once the outbox takes them.

    async def emit(self, records: Sequence[Record]) -> None:
        """Rules, then the outbox; returns once what remains is durable."""
        await self._emit(records, durable=True)

    async def submit(self, records: Sequence[Record]) -> None:
        """Rules, then the outbox; waits for durability only if events remain."""
        await self._emit(records, durable=False)

    async def _emit(self, records: Sequence[Record], *, durable: bool) -> None:
        out = self.rules.process(records)
        try:
            if out and not durable and all(r.__class__ is Measurement for r in out):
                future = await self.outbox.submit(out)
                future.add_done_callback(functools.partial(self._submitted, len(out)))
            elif out:
                await self._store(out)
        except (OutboxError, OutboxClosed) as e:
            self._keep_derived(out, records)
            reason = e.reason.value if isinstance(e, OutboxError) else "closed"
            raise EmitRefused(reason, str(e)) from e
        except BaseException:
            self._keep_derived(out, records)
            raise
        finally:
            if self.rules.next_deadline_ms() is not None or self._retry:
                self._wake.set()

    def _keep_derived(self, out: Sequence[Record], given: Sequence[Record]) -> None:
        ids = {id(r) for r in given}
        derived = [r for r in out if isinstance(r, Event) and id(r) not in ids]
        if derived:
            self._retry.extend(derived)
            self.counters.inc("rule_event_retry", len(derived))

    def _submitted(self, count: int, future: asyncio.Future[list[Record]]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self.state.note(future.result())
            return
        self.counters.inc("measurements_not_stored", count)
        log.warning("%d readings not stored: %s", count, error)

    async def _store(self, records: list[Record]) -> None:
        stored = await self.outbox.append(records)
        self.state.note(stored)
        raised: list[tuple[str, str]] = []
        cleared: list[tuple[str, str]] = []
        for r in stored:
            if isinstance(r, Event) and r.type not in POINT_EVENTS:
                key = (r.source.id, r.type.value)
                if r.active and key not in self.conditions:
                    self.conditions.add(key)
                    raised.append(key)
                elif not r.active and key in self.conditions:
                    self.conditions.discard(key)
                    cleared.append(key)
        if raised or cleared:
            try:
                await asyncio.to_thread(self.state.write_conditions, raised, cleared)
            except Exception:  # the view is not the data: the records are stored
                self.counters.inc("conditions_write_failed")
        active = self.rules.active
        if active != self._last_active:
            self._last_active = active
            self.state.set_active(active)

    async def run_rules_clock(self) -> None:
        """Mature debounced thresholds on time; runs until cancelled."""
        while True:
            deadline = self.rules.next_deadline_ms()
            if self._retry:
                deadline = min(deadline or wall_ms() + 1000, wall_ms() + 1000)
            self._wake.clear()
            if deadline is None:
                await self._wake.wait()
                continue
            delay = max(0.0, (deadline - wall_ms()) / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay + 0.005)
            matured = [*self._retry, *self.rules.tick(wall_ms())]
            self._retry = []
            if matured:
                try:
                    await self._store(matured)
                except Exception:
                    self._retry = matured  # retried in a second; counted
                    self.counters.inc("emit_failed")
