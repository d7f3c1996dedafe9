"""Outbox -> broker: batches out at QoS 1; a record leaves the outbox when it is stored.

One :class:`Forwarder` serves every session (``MqttUplink.run(forwarder.serve, ...)``). Per
session it puts everything the last session left in flight back to pending
(``outbox.release_all()``), subscribes to the gateway's ``stored`` topic, then loops: take a
batch (fire alarms first, in a small batch of their own), join the stored record bytes into a
contract batch, publish it; a failed publish ``nack``s them (pending again, same seqs).

**Delivered means stored** (``delete_on = "stored"``, the default). The broker's PUBACK says
the broker has the message, not that it will keep it (a crash loses what it took since its
last save). So on PUBACK the records are only marked sent (``outbox.mark_sent``, in memory);
they are deleted when a collector publishes that it stored them (``firegate/v1/<gw>/stored``,
decoded strictly, :meth:`outbox.confirm <edge.outbox.Outbox.confirm>`). A sent record not
confirmed within ``confirm_timeout_s`` is pending again and goes out again (the collector
drops the duplicate). With ``delete_on = "puback"`` (a broker without a firegate collector)
the records are deleted at the PUBACK (``outbox.ack``), as before.

Throughput comes from a window of ``max_inflight`` record messages awaiting PUBACK (a
1,000,000-record backlog drains at tens of thousands of records/s to a local broker). Rules
that keep the window from costing what matters more:

* **A fire alarm never waits for the window**: one more message is reserved for it, and while
  the window is full the forwarder looks for a newly stored fire alarm every
  ``FIRE_POLL_S`` (the outbox's ``next_batch`` then hands it out first, alone).
* **Nor behind much data**: on one connection a fire alarm still queues behind the bytes
  already handed to it, so the window is also bounded by time: at most about
  ``queue_target_s`` (1 s) of the link's measured throughput is unacknowledged. On loopback
  that is never the limit; on a 1 Mbit/s cellular link it is one or two messages instead of
  16 x 128 KiB (~17 s of queue, beyond GB 26875.1's 10 s for a fire alarm).
* **Nor much beyond what the collector has confirmed**: at most ``UNCONFIRMED_MESSAGES``
  messages' worth of records wait for their confirmation (fire alarms excepted). Without
  it, a collector that is down while the broker queues for its persistent session would
  take the whole backlog every ``confirm_timeout_s``, and the sent state (in memory) would
  have no bound.
* **Readings linger, events do not**: when only a few readings are pending (fewer than a
  message holds) the forwarder waits up to ``linger_s`` (1 s) for more, woken by each commit
  and ending the wait as soon as an event or a fire alarm is stored. A trickle of 1,000
  readings/s then costs one message, PUBACK and delete a second instead of hundreds.
* **No reordering inside a class**: for fire alarms, alarms and events - where a restore
  must never overtake its raise - at most one message carrying the class awaits its PUBACK at
  a time. MQTT delivers one connection's messages in order (MQTT 3.1.1 §4.6, 5.0 §4.6), but a
  message refused with a reason code (quota, ACL) would otherwise leave a later one of the
  same class delivered ahead of it. Measurements, the bulk of any backlog, pipeline freely.

A refused records publish ends the session (the uplink reconnects with back-off), so a broker
that keeps refusing is retried at the back-off pace, not in a tight loop; the records stay in
the outbox. A PUBACK 0x10 (No matching subscribers: no collector session exists at all) is no
delivery either: the records are pending again and the forwarder pauses with jittered,
doubling back-off (``common.backoff``) before it tries again, in both ``delete_on`` modes.
Duplicates are possible (a PUBACK lost with the connection, a confirmation lost or late) and
always carry the same seq, which the collector drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from common.backoff import Backoff
from edge.config.uplink import DeleteOn, UplinkConfig
from edge.drivers.base import Counters, wall_ms
from edge.outbox import BATCH_HEAD_MAX, Outbox, OutboxClosed, OutboxError, StoredRecord
from protocols.wire import (
    MAX_PAYLOAD_BYTES,
    Channel,
    Priority,
    Stored,
    WireError,
    WireErrorReason,
    decode_stored,
    encode_batch_from_encoded,
    topic,
)

from .session import (
    RESERVED_SLOTS,
    Message,
    MqttSession,
    NoSubscribers,
    PublishRefused,
    SubscribeRefused,
)

__all__ = ["FIRE_POLL_S", "UNCONFIRMED_MESSAGES", "Forwarder"]

log = logging.getLogger("edge.uplink")

FIRE_POLL_S = 0.02
"""While the window is full, how often to look for a newly stored fire alarm."""
QUEUE_TARGET_S = 1.0
"""Unacknowledged records data allowed, in seconds of measured throughput."""
INITIAL_RATE = 256 * 1024
"""Bytes/s assumed until the first large message has been acknowledged."""
RATE_SAMPLE_MIN_BYTES = 16 * 1024
"""Smaller messages are dominated by the round trip, not by the throughput."""
OUTBOX_RETRY_S = 1.0
UNCONFIRMED_MESSAGES = 64
"""Records sent and not yet confirmed, at most, in messages of ``batch_max_records``
(64,000 records, ~9 MB, by default): with a collector confirming within ~1 s that is no
limit on a drain, and it bounds what a silent collector costs."""
NO_SUBSCRIBERS_MAX_S = 10.0
"""Longest pause after PUBACK 0x10 (no collector session): a collector that comes back
gets the first records (fire alarms first) within this long."""
ACK_FLUSH_S = 5.0
"""Longest wait, at the end of a session, for the acks of what the broker confirmed."""
_FIRE = Priority.FIRE
_MEAS = Priority.MEASUREMENT
_ORDERED = frozenset({Priority.FIRE, Priority.ALARM, Priority.EVENT})
_MESSAGE_BYTES = MAX_PAYLOAD_BYTES - BATCH_HEAD_MAX


@dataclass(eq=False, slots=True)
class _Flight:
    """One records message between ``next_batch`` and its ack (or nack)."""

    seqs: tuple[int, ...]
    per_class: Counter[Priority]
    fire: bool
    ordered: frozenset[Priority]
    nbytes: int = 0
    sent_at: float = 0.0

    @classmethod
    def of(cls, batch: Sequence[StoredRecord]) -> _Flight:
        per_class = Counter(r.priority for r in batch)
        return cls(tuple(r.seq for r in batch), per_class, batch[0].priority is _FIRE,
                   frozenset(per_class) & _ORDERED)


@dataclass(eq=False, slots=True)
class _Window:
    """One session's messages in flight; discarded with the session."""

    limit: int
    flights: int = 0  # non-fire messages not yet acked/nacked (the window proper)
    bytes_out: int = 0  # payload bytes of non-fire messages awaiting their PUBACK
    last_ack_at: float = 0.0
    busy: Counter[Priority] = field(default_factory=Counter)  # ordered classes awaiting PUBACK
    held: Counter[Priority] = field(default_factory=Counter)  # records taken, not yet done
    to_ack: list[_Flight] = field(default_factory=list)
    acks_ready: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def take(self, flight: _Flight) -> None:
        self.held.update(flight.per_class)
        if not flight.fire:
            self.flights += 1

    def finish(self, flight: _Flight) -> None:
        self.held.subtract(flight.per_class)
        if not flight.fire:
            self.flights -= 1
        self.changed.set()

    async def wait_changed(self, timeout: float | None) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.changed.wait()


class Forwarder:
    """Moves records from the outbox to ``firegate/v1/<gw>/records``; one per gateway.

    ``acked_records`` / ``acked_batches`` count what the broker acknowledged (PUBACK) since
    start, ``confirmed_records`` what collectors confirmed stored (and the outbox deleted);
    ``counters`` gets ``ack_failed``, ``unsendable``, ``no_subscribers``, ``stored_invalid``,
    ``confirm_failed``, ``unconfirmed_resent`` and ``subscribe_refused`` by reason.
    """

    def __init__(self, outbox: Outbox, config: UplinkConfig, *, gateway_id: str,
                 site: str | None = None, counters: Counters | None = None,
                 clock_ms: Callable[[], int] = wall_ms,
                 queue_target_s: float = QUEUE_TARGET_S) -> None:
        self._outbox = outbox
        self._stored = config.delete_on is DeleteOn.STORED
        self._confirm_timeout_s = config.confirm_timeout_s
        self._max_unconfirmed = UNCONFIRMED_MESSAGES * config.batch_max_records
        self._batch_max = config.batch_max_records
        self._max_inflight = config.max_inflight
        self._linger_s = config.linger_s
        self._linger_since: float | None = None  # readings pending since (loop time)
        self._gw = gateway_id
        self._site = site
        self._topic = topic(gateway_id, Channel.RECORDS)
        self._stored_topic = topic(gateway_id, Channel.STORED)
        self._clock = clock_ms
        quiet_max = max(config.reconnect_min_s, min(config.reconnect_max_s, NO_SUBSCRIBERS_MAX_S))
        self._quiet = Backoff(config.reconnect_min_s, quiet_max, jitter=0.5)
        self._quiet_until = 0.0  # loop time: no records go out before (after PUBACK 0x10)
        self.counters = counters if counters is not None else Counters()
        self._queue_target_s = queue_target_s
        self.throughput: float | None = None
        """Bytes/s the link acknowledged large messages at (EWMA); None until measured."""
        self.acked_records = 0
        self.acked_batches = 0
        self.confirmed_records = 0
        self.on_confirmed: Callable[[tuple[int, ...]], None] | None = None
        """Called on the event loop with the seqs of each records message the broker
        acknowledged (PUBACK 0x00, before anything is deleted): delivery tracking, latency
        figures."""

    async def drain(self, timeout: float) -> int:
        """Stop lingering and wait up to ``timeout`` s for the outbox to empty (on a clean
        stop, with the producers already stopped); returns the records left."""
        self._linger_s = 0.0  # a linger under way ends at its deadline, within linger_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := self._outbox.total_depth + self._outbox.queued_records) and \
                loop.time() < deadline:
            await asyncio.sleep(0.02)
        return left

    async def serve(self, session: MqttSession) -> None:
        """Forward until cancelled (when the session ends); a :class:`Service`."""
        # The broker may accept fewer unacknowledged messages than configured (MQTT 5
        # Receive Maximum); status, health and acks need their share too.
        limit = max(1, min(self._max_inflight, session.receive_maximum - RESERVED_SLOTS))
        window = _Window(limit)
        released = self._outbox.release_all()
        if released:
            log.info("uplink: %d records in flight in the last session go out again", released)
        helpers: list[asyncio.Task[None]] = []
        if self._stored:
            # Every session: a clean session keeps no subscription. Queued before the first
            # batch, so no confirmation of it can arrive unseen; its SUBACK is not waited
            # for (a fire alarm does not wait for a slow broker's answer).
            inbox = session.inbox(self._stored_topic)
            subscribed = session.subscribe(self._stored_topic)
            helpers += [asyncio.create_task(self._subscribed(subscribed),
                                            name="uplink stored subscription"),
                        asyncio.create_task(self._confirmations(inbox),
                                            name="uplink confirmations"),
                        asyncio.create_task(self._requeue_unconfirmed(),
                                            name="uplink confirm timeout")]
        else:
            helpers.append(asyncio.create_task(self._acker(window), name="uplink acks"))
        for task in helpers:
            task.add_done_callback(lambda _: window.changed.set())
        try:
            await self._pump(session, window, helpers)
        finally:
            # What the broker confirmed is deleted even though the session is over (else it
            # would go out again after the reconnect); then the window is dropped.
            window.closed = True
            window.acks_ready.set()
            if not self._stored:
                await asyncio.wait(helpers, timeout=ACK_FLUSH_S)
            for task in helpers:
                task.cancel()
            await asyncio.wait(helpers)

    def _fire_waiting(self) -> bool:
        return self._outbox.pending(_FIRE) > 0

    def _byte_budget(self) -> float:
        return (self.throughput or INITIAL_RATE) * self._queue_target_s

    def _may_take(self, window: _Window) -> bool:
        if asyncio.get_running_loop().time() < self._quiet_until:
            return False  # no subscriber a moment ago: nobody to send to, fire alarms neither
        if window.flights < window.limit and (
                window.bytes_out == 0 or window.bytes_out < self._byte_budget()) and (
                not self._stored or self._outbox.sent_unconfirmed + sum(window.held.values())
                < self._max_unconfirmed):
            return True
        return not window.busy[_FIRE] and self._fire_waiting()

    def _measure(self, window: _Window, flight: _Flight) -> None:
        # The time this message spent at the head of the queue: since the previous PUBACK
        # if it was already waiting behind it, else since it was sent (an idle link).
        now = time.monotonic()
        if not flight.fire and flight.nbytes >= RATE_SAMPLE_MIN_BYTES:
            busy_s = max(now - max(flight.sent_at, window.last_ack_at), 1e-4)
            sample = flight.nbytes / busy_s
            old = self.throughput
            self.throughput = sample if old is None else 0.8 * old + 0.2 * sample
        window.last_ack_at = now

    def _few_readings(self) -> bool:
        """Only readings are pending, fewer than fill a message."""
        outbox = self._outbox
        if any(outbox.pending(p) for p in _ORDERED):
            return False
        depth = outbox.depth(_MEAS)
        pending = outbox.pending(_MEAS)
        if pending >= self._batch_max:
            return False
        nbytes = outbox.payload_bytes(_MEAS)
        return pending * (nbytes / depth if depth else 0.0) < _MESSAGE_BYTES

    async def _linger(self) -> None:
        """Wait up to ``linger_s`` for more readings to fill a message; woken by each commit
        that stores records, so an event or a fire alarm ends it at once (no polling)."""
        loop = asyncio.get_running_loop()
        if self._linger_since is None:
            # Kept until readings go out: a fire alarm sent alone meanwhile does not
            # restart the wait of the readings already pending.
            self._linger_since = loop.time()
        deadline = self._linger_since + self._linger_s
        while self._few_readings():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await self._outbox.wait_stored(remaining)

    async def _pump(self, session: MqttSession, window: _Window,
                    helpers: list[asyncio.Task[None]]) -> None:
        while not session.closed.done():  # then the uplink cancels us; take nothing more
            for task in helpers:
                if task.done():
                    task.result()  # they only end by a bug: raise it (the session restarts)
            if not self._may_take(window):
                await window.wait_changed(FIRE_POLL_S)
                continue
            await self._outbox.wait_for_records()
            if self._linger_s > 0:
                await self._linger()
            if not self._may_take(window):
                continue  # a PUBACK 0x10 came meanwhile: paused (the records it put back woke us)
            try:
                batch = await self._outbox.next_batch(self._batch_max)
            except OutboxError as e:  # counted by the outbox too; the disk may recover
                self.counters.inc("outbox_error")
                log.error("uplink: outbox read failed: %s", e)
                await asyncio.sleep(OUTBOX_RETRY_S)
                continue
            if not batch:
                continue
            flight = _Flight.of(batch)
            if flight.per_class[_MEAS]:
                self._linger_since = None
            window.take(flight)
            # Seq order within a class: wait until no earlier message of this batch's
            # event classes awaits its PUBACK (see the module docstring).
            while any(window.busy[p] for p in flight.ordered):
                await window.wait_changed(None)
            self._send(session, window, flight, batch)

    def _send(self, session: MqttSession, window: _Window, flight: _Flight,
              batch: Sequence[StoredRecord]) -> None:
        try:
            payload = encode_batch_from_encoded(self._gw, self._site, self._clock(),
                                                [r.encoded for r in batch],
                                                epoch=self._outbox.epoch)
        except WireError as e:
            # Cannot happen with next_batch's byte budget; if it does, the records stay in
            # flight (not retried in a loop, not lost) until the next session releases them.
            self.counters.inc("unsendable", len(batch))
            log.error("uplink: cannot encode seqs %d..%d: %s", flight.seqs[0], flight.seqs[-1], e)
            return
        future = session.publish(self._topic, payload)
        flight.nbytes, flight.sent_at = len(payload), time.monotonic()
        if not flight.fire:
            window.bytes_out += flight.nbytes
        window.busy.update(flight.ordered)
        future.add_done_callback(lambda f: self._published(session, window, flight, f))

    def _published(self, session: MqttSession, window: _Window, flight: _Flight,
                   future: asyncio.Future[None]) -> None:
        error = future.exception() if not future.cancelled() else None
        if window.closed:
            return  # the next session releases everything this one had in flight
        window.busy.subtract(flight.ordered)
        if not flight.fire:
            window.bytes_out -= flight.nbytes
        if error is None and not future.cancelled():
            self._measure(window, flight)
            self._quiet.reset()
            if self._stored:  # kept until a collector confirms it (no write now)
                self._outbox.mark_sent(flight.seqs)
                self.acked_records += len(flight.seqs)
                self.acked_batches += 1
                window.finish(flight)
            else:
                window.to_ack.append(flight)
                window.acks_ready.set()
                window.changed.set()
            if self.on_confirmed is not None:
                try:
                    self.on_confirmed(flight.seqs)
                except Exception:
                    log.exception("uplink: on_confirmed failed")
            return
        self._outbox.nack(flight.seqs)
        window.finish(flight)
        if isinstance(error, NoSubscribers):
            self.counters.inc("no_subscribers")
            self._pause()
        elif isinstance(error, PublishRefused):
            # Nothing more goes out on this session; the uplink reconnects with back-off.
            session.end(error)

    def _pause(self) -> None:
        """PUBACK 0x10: nobody subscribes to the records (no collector session exists).
        Pause before the next try; one back-off step per pause, however many messages of
        the window come back with 0x10."""
        now = asyncio.get_running_loop().time()
        if now < self._quiet_until:
            return
        delay = self._quiet.next()
        self._quiet_until = now + delay
        log.warning("uplink: no subscriber for %s (no collector session); the records stay "
                    "in the outbox, next try in %.1f s", self._topic, delay)

    async def _subscribed(self, subscribed: asyncio.Future[None]) -> None:
        try:
            await subscribed
        except SubscribeRefused as e:  # records still flow, and are kept
            self.counters.inc("subscribe_refused")
            log.error("uplink: %s; records are kept and sent again every %g s until a "
                      "confirmation can arrive", e, self._confirm_timeout_s)

    async def _confirmations(self, inbox: asyncio.Queue[Message]) -> None:
        """Apply the collectors' ``stored`` messages; what arrived together shares one
        outbox commit."""
        while True:
            messages = [await inbox.get()]
            while not inbox.empty():
                messages.append(inbox.get_nowait())
            confirms = []
            for message in messages:
                stored = self._decode(message.payload)
                if stored is not None:
                    confirms.append(self._outbox.confirm(stored.epoch, stored.ranges))
            for outcome in await asyncio.gather(*confirms, return_exceptions=True):
                if isinstance(outcome, OutboxError | OutboxClosed):
                    # Not deleted: sent again after confirm_timeout_s, and confirmed again.
                    self.counters.inc("confirm_failed")
                    log.error("uplink: outbox delete of confirmed records failed: %s", outcome)
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    self.confirmed_records += outcome

    def _decode(self, payload: bytes) -> Stored | None:
        """A confirmation, strictly decoded and of this gateway; None (counted) if not."""
        try:
            stored = decode_stored(payload)
            if stored.gateway_id != self._gw:
                raise WireError(WireErrorReason.GATEWAY_MISMATCH, "gw",
                                f"{stored.gateway_id!r} on the topic of {self._gw!r}")
        except WireError as e:
            self.counters.inc("stored_invalid")
            log.warning("uplink: confirmation refused: %s", e)
            return None
        return stored

    async def _requeue_unconfirmed(self) -> None:
        """Sent records whose confirmation did not come within ``confirm_timeout_s`` go out
        again (the outbox's send order: fire alarms first)."""
        timeout = self._confirm_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            n = self._outbox.requeue_unconfirmed(timeout)
            if n:
                self.counters.inc("unconfirmed_resent", n)
                log.warning("uplink: %d records not confirmed stored within %g s go out "
                            "again", n, timeout)

    async def _acker(self, window: _Window) -> None:
        # Acks of everything confirmed meanwhile share one outbox call (one commit).
        while not (window.closed and not window.to_ack):
            await window.acks_ready.wait()
            window.acks_ready.clear()
            flights, window.to_ack = window.to_ack, []
            if not flights:
                continue
            seqs = [s for f in flights for s in f.seqs]
            try:
                await self._outbox.ack(seqs)
            except (OutboxError, OutboxClosed) as e:
                # Delivered but not deleted: sent again after the next reconnect (same seqs).
                self.counters.inc("ack_failed")
                log.error("uplink: outbox ack of %d records failed: %s", len(seqs), e)
            else:
                self.acked_records += len(seqs)
                self.acked_batches += len(flights)
            for f in flights:
                window.finish(f)
