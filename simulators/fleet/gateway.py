"""One virtual gateway: a record mix, an outbox, a paho client and its ledger.

Life of a gateway (``Link``)::

    IDLE -> CONNECTING -> ONLINE -> CLOSING -> CLOSED          (clean end: status "shutdown")
                  |          |  drop(): socket shut without DISCONNECT, the broker sends the will
                  |          +-> OFFLINE -- offline_for later --> CONNECTING (catch-up)
                  |          +-> BACKOFF (connection lost) -- retry --> CONNECTING
                  +-> FAILED (CONNACK refused, or a PUBACK with a failure code: not retried)

Every connection gets a **fresh paho client**. paho would re-send its unacknowledged messages
itself after a reconnect; a new client leaves that to the outbox, which puts the records of
unacknowledged messages back (in priority order) and tells the ledger they go out twice. The
last will is registered at each CONNECT with that connect's time (``last_will()``).

Delivered means stored (docs/wire-protocol.md, "Stored"), as on the agent and the firmware:
each gateway has a random **epoch** for the run, in every batch and health message; with
``delete_on="stored"`` it subscribes to its own ``stored`` topic at every connect (before it
sends anything), keeps a record after its PUBACK until a confirmation of its epoch names it,
and sends it again when the confirmation has not come ``confirm_timeout`` seconds after the
PUBACK (a confirmation published while the gateway was away is lost with its clean session).
With ``delete_on="puback"`` the PUBACK deletes, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from protocols.wire import (
    Channel,
    GatewayState,
    Health,
    LinkState,
    Record,
    Status,
    WireError,
    decode_stored,
    encode_health,
    encode_status,
    last_will,
    pack_batches,
    topic,
)

from .bridge import SocketBridge
from .config import CONTROL_SLOTS, BrokerAddress, FleetConfig, expand_template
from .ledger import Catchup, GatewayLedger
from .mix import RecordMix
from .outbox import FleetOutbox
from .ranges import SeqRanges

__all__ = ["VERSION", "Link", "Shared", "VirtualGateway"]

VERSION = "firegate-fleet-sim 0.1.0"
BACKOFF = (0.5, 8.0)  # first and largest retry delay after a lost connection, seconds


class Link(Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    BACKOFF = "backoff"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


@dataclass
class Shared:
    """What every gateway of a fleet uses: the loop, the bridge, the broker, the settings."""

    loop: asyncio.AbstractEventLoop
    bridge: SocketBridge
    config: FleetConfig
    address: BrokerAddress
    ssl_context: ssl.SSLContext | None
    guard: Callable[[Callable[[], None]], Callable[[], None]]
    """Wraps timer callbacks so an exception stops the run instead of being logged."""
    on_production_end: Callable[[], None]
    """Called once per gateway when it stops producing (quota met, or stopped)."""
    on_refused: Callable[[], None]
    """Called once per gateway whose CONNECT the broker refused."""


@dataclass(slots=True)
class _InFlight:
    records: list[Record]
    seqs: tuple[int, ...]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class VirtualGateway:
    """A simulated gateway. The fleet calls ``start()``, ``connect()``, ``drop()``,
    ``stop_production()``/``halt()``, ``close()`` and ``abort()``; everything else is driven
    by its timers and paho callbacks."""

    def __init__(self, shared: Shared, index: int) -> None:
        self.s = shared
        cfg = shared.config
        self.index = index
        self.id = cfg.gateway_id(index)
        self.site = cfg.site_id(index)
        self.records_topic = topic(self.id, Channel.RECORDS)
        self.status_topic = topic(self.id, Channel.STATUS)
        self.health_topic = topic(self.id, Channel.HEALTH)
        self.stored_topic = topic(self.id, Channel.STORED)
        self.mix = RecordMix(self.id, cfg.seed, cfg.alarm_rate)
        self.outbox = FleetOutbox()
        # Random, not from the seed: a second run with the same seed is a new store whose
        # seqs 1, 2, 3... a collector must not take for repeats of the first run's.
        self.epoch = secrets.randbits(63) or 1
        self.confirming = cfg.delete_on == "stored"
        self.ledger = GatewayLedger(self.id, self.site, self.epoch, cfg.delete_on)
        if cfg.keep_records:
            self.ledger.records = {}
        self.link = Link.IDLE
        self.seq = 0
        self.quota = cfg.quota(index)
        self.producing = True
        self._rate = cfg.per_gateway_rate
        self._credit = 0.0
        self._client: mqtt.Client | None = None
        self._inflight: dict[int, _InFlight] = {}
        self._control: dict[int, str] = {}
        self._offline_since: int | None = None
        self._retries = 0
        self._started = 0.0
        self._last_tick = 0.0
        self._end: float | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # -- timers -----------------------------------------------------------------------------

    def _at(self, name: str, when: float, fn: Callable[[], None]) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        self._timers[name] = self.s.loop.call_at(when, self.s.guard(fn))

    def _cancel(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def start(self, t0: float, phase: float, end: float | None) -> None:
        """Begin producing at ``t0`` (until loop time ``end`` if given); the first batch is
        due ``phase`` (0..1) of an interval later, so that a fleet's batches spread over the
        interval instead of bursting."""
        cfg = self.s.config
        self._started = self._last_tick = t0
        self._end = end
        self._at("tick", t0 + cfg.batch_interval * phase, self._tick)
        self._at("health", t0 + cfg.health_interval * phase, self._health)

    # -- production -------------------------------------------------------------------------

    def _produce_until(self, t: float) -> None:
        if not self.producing:
            return
        ended = self._end is not None and t >= self._end
        if self._end is not None:
            t = min(t, self._end)
        # At most two intervals' worth per tick: a starved loop lowers the rate it achieves
        # (the report shows it) rather than piling up an unbounded burst.
        elapsed = min(t - self._last_tick, 2 * self.s.config.batch_interval)
        self._last_tick = t
        self._credit += elapsed * self._rate
        n = int(self._credit)
        self._credit -= n
        if self.quota is not None:
            n = min(n, self.quota)
            self.quota -= n
        if n > 0:
            t1 = now_ms()
            t0 = t1 - int(elapsed * 1000)
            self._fill(n, t0, t1)
        if self.quota == 0 or ended:
            self._end_production()

    def _fill(self, n: int, t0_ms: int, t1_ms: int) -> None:
        new: list[Record] = []
        self.mix.fill(new, self.seq + 1, n, t0_ms, t1_ms)
        self._add(new)

    def _add(self, new: list[Record]) -> None:
        first = self.seq + 1
        self.seq += len(new)
        self.ledger.produced.add_range(first, self.seq)
        if self.ledger.records is not None:
            self.ledger.records.update((r.seq, r) for r in new)
        self.outbox.add(new)

    def _link_event(self, *, down: bool) -> None:
        self._add([self.mix.link_fault(self.seq + 1, now_ms(), down=down)])

    def _end_production(self) -> None:
        if self.producing:
            self.producing = False
            self.s.on_production_end()

    def halt(self) -> None:
        """Produce nothing more (the run is ending early)."""
        self._end_production()

    def stop_production(self) -> None:
        """Produce what is due until the end of a duration run, then no more."""
        if self._end is not None:
            self._produce_until(self._end)
        self._end_production()

    def _tick(self) -> None:
        cfg = self.s.config
        now = self.s.loop.time()
        self._produce_until(now)
        if self.confirming:
            again = self.outbox.expire(now, cfg.confirm_timeout)
            self.ledger.timeouts += again
        self.flush(full_only=False)
        if self.link is not Link.CLOSED:
            due = self._timers["tick"].when() + cfg.batch_interval
            self._at("tick", max(due, now), self._tick)

    @property
    def settled(self) -> bool:
        """Nothing left to send or to wait for (or nothing more can be sent)."""
        if self.link in (Link.FAILED, Link.CLOSED):
            return True
        return self.link is Link.ONLINE and not self.producing and not self.outbox.held \
            and not self._inflight

    # -- sending ----------------------------------------------------------------------------

    def flush(self, *, full_only: bool) -> None:
        """Hand waiting records to MQTT, up to the in-flight window; ``full_only`` sends only
        full batches (a catch-up keeps streaming between ticks)."""
        if self.link is not Link.ONLINE or self._client is None:
            return
        cfg = self.s.config
        client, outbox = self._client, self.outbox
        while outbox and len(self._inflight) < cfg.window:
            free = cfg.window - len(self._inflight)
            n = min(len(outbox), free * cfg.max_batch)
            if full_only:
                n = n // cfg.max_batch * cfg.max_batch
            if n == 0:
                return
            records = outbox.take(n)
            again = outbox.resent(records)
            if again:
                self.ledger.resent.update(again)
            start = 0
            for packed in pack_batches(self.id, self.site, now_ms(), records,
                                       max_records=cfg.max_batch, epoch=self.epoch):
                stop = start + len(packed.seqs)
                info = client.publish(self.records_topic, packed.payload, qos=1)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:  # not connected: keep them
                    outbox.put_back(records[start:])
                    return
                self._inflight[info.mid] = _InFlight(records[start:stop], packed.seqs)
                self.ledger.messages += 1
                start = stop

    def _publish_control(self, what: str, channel_topic: str, payload: bytes,
                         retain: bool) -> None:
        if self._client is None:
            return
        info = self._client.publish(channel_topic, payload, qos=1, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._control[info.mid] = what

    def _status(self, state: GatewayState, reason: str | None = None) -> bytes:
        return encode_status(Status(self.id, state, now_ms(), version=VERSION, site=self.site,
                                    reason=reason))

    def _health(self) -> None:
        cfg = self.s.config
        if self.link is Link.ONLINE:
            self._publish_health()
        if self.link not in (Link.CLOSED, Link.FAILED):
            self._at("health", self.s.loop.time() + cfg.health_interval, self._health)

    def _publish_health(self) -> None:
        oldest = self.outbox.oldest_ms()
        ts = now_ms()
        waiting = self.outbox.held + sum(len(f.seqs) for f in self._inflight.values())
        led = self.ledger
        health = Health(
            gateway_id=self.id, ts_ms=ts, uptime_s=max(0.0, self.s.loop.time() - self._started),
            version=VERSION, outbox_depth=waiting,
            outbox_oldest_s=None if oldest is None else max(0.0, (ts - oldest) / 1000),
            counters={"uplink": {"connects": led.connects, "drops": led.drops, "lost": led.lost,
                                 "confirmations": led.confirmations,
                                 "other_epoch": led.other_epoch, "timeouts": led.timeouts}},
            links={"uplink": LinkState.UP}, last_seq=self.seq, epoch=self.epoch)
        self._publish_control("health", self.health_topic, encode_health(health), False)

    # -- connection -------------------------------------------------------------------------

    def connect(self) -> None:
        """Open a new MQTT connection (blocking TCP/TLS connect, then CONNECT is queued)."""
        if self.link in (Link.CLOSING, Link.CLOSED, Link.FAILED, Link.ONLINE, Link.CONNECTING):
            return
        s, cfg = self.s, self.s.config
        v5 = cfg.mqtt == "5"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             clean_session=None if v5 else True)
        client.max_inflight_messages_set(cfg.window + CONTROL_SLOTS)
        client.connect_timeout = cfg.connect_timeout
        if s.ssl_context is not None:
            client.tls_set_context(s.ssl_context)
        if cfg.username is not None:
            def fill(template: str) -> str:
                return expand_template(template, gateway=self.id, site=self.site,
                                       index=self.index)

            client.username_pw_set(fill(cfg.username),
                                   None if cfg.password is None else fill(cfg.password))
        will = last_will(self.id, now_ms(), version=VERSION, site=self.site)
        client.will_set(self.status_topic, encode_status(will), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        s.bridge.attach(client)
        self._client = client
        self.link = Link.CONNECTING
        try:
            if v5:
                client.connect(s.address.host, s.address.port, cfg.keepalive, clean_start=True)
            else:
                client.connect(s.address.host, s.address.port, cfg.keepalive)
        except OSError as e:
            self._client = None
            self.ledger.errors[f"connect: {describe(e)}"] += 1
            self._backoff()

    def _backoff(self) -> None:
        self.link = Link.BACKOFF
        first, largest = BACKOFF
        delay = min(largest, first * 2 ** min(self._retries, 8))
        self._retries += 1
        delay *= 0.5 + self.mix.rng.random() / 2  # jitter: a fleet must not return in step
        self._at("connect", self.s.loop.time() + delay, self.connect)

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: mqtt.ConnectFlags,
                    reason: ReasonCode, _props: Properties | None) -> None:
        if client is not self._client:
            return
        if reason.is_failure:
            # Refused credentials or client id: retrying cannot help, so stop here loudly.
            self.ledger.errors[f"connack: {reason}"] += 1
            self._give_up()
            return
        self.link = Link.ONLINE
        self._retries = 0
        self.ledger.connects += 1
        if self.confirming:  # first: the confirmations of what this connection sends
            client.subscribe(self.stored_topic, qos=1)
        if self._offline_since is not None:
            self._link_event(down=False)
            self.ledger.catchups.append(Catchup(
                self._offline_since, now_ms(), SeqRanges(self.outbox.seqs()),
                self.outbox.alarms()))
            self._offline_since = None
        self._publish_control("online", self.status_topic, self._status(GatewayState.ONLINE),
                              True)
        self._publish_health()
        self.flush(full_only=False)

    def _on_disconnect(self, client: mqtt.Client, _ud: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, _props: Properties | None) -> None:
        if client is not self._client:
            return  # a client we already let go (drop(), a refused CONNACK)
        self._client = None
        if self.link is Link.CLOSING:
            self.link = Link.CLOSED
            return
        was_online = self.link is Link.ONLINE
        self._requeue()
        self.ledger.lost += 1
        said = f": {reason}" if flags.is_disconnect_packet_from_server else ""
        self.ledger.errors[f"connection lost{said}"] += 1
        if was_online:
            self._uplink_down()
        self._backoff()

    def _on_publish(self, client: mqtt.Client, _ud: Any, mid: int, reason: ReasonCode,
                    _props: Properties | None) -> None:
        if client is not self._client:
            return
        entry = self._inflight.pop(mid, None)
        if entry is None:
            what = self._control.pop(mid, None)
            if what is not None and reason.is_failure:
                self.ledger.errors[f"puback {what}: {reason}"] += 1
            if what == "shutdown" and self.link is Link.CLOSING:
                client.disconnect()
            return
        if reason.is_failure:
            # The broker refused the records (MQTT 5; e.g. 0x87 when the ACL forbids the
            # topic). Sending more cannot help - and Mosquitto 2.0 also closes the connection
            # after a denied publish (eclipse-mosquitto/mosquitto#2579), which would make a
            # reconnect loop of it - so the gateway stops sending, cleanly.
            self.ledger.rejected.update(entry.seqs)
            self.ledger.errors[f"puback records: {reason}"] += 1
            client.disconnect()
            self._give_up()
            return
        self.ledger.acked.update(entry.seqs)
        self.ledger.acked_messages += 1
        if self.confirming:  # held until the collector confirms it
            self.outbox.mark_sent(entry.records, self.s.loop.time())
        if len(self.outbox) >= self.s.config.max_batch:
            self.flush(full_only=True)

    def _on_subscribe(self, client: mqtt.Client, _ud: Any, _mid: int,
                      reasons: list[ReasonCode], _props: Properties | None) -> None:
        if client is self._client:
            for reason in reasons:
                if reason.is_failure:
                    self.ledger.errors[f"suback stored: {reason}"] += 1

    def _on_message(self, client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        """A collector's ``stored``: delete what it names of this gateway's epoch."""
        if client is not self._client or msg.topic != self.stored_topic:
            return
        led = self.ledger
        try:
            stored = decode_stored(bytes(msg.payload))
        except WireError as e:
            led.errors[f"stored: {e.reason.value}"] += 1
            return
        if stored.gateway_id != self.id:
            led.errors["stored: another gateway's"] += 1
            return
        if stored.epoch != self.epoch:
            led.other_epoch += 1  # counted, ignored (docs/wire-protocol.md "Stored")
            return
        led.confirmations += 1
        named = SeqRanges.from_ranges(stored.ranges)
        beyond = named.difference(SeqRanges.from_ranges([(1, self.seq)]))
        if beyond:  # a collector's bug (or another run's gateway in this epoch: impossible)
            led.errors["stored: seqs never produced"] += 1
        fresh = named.difference(beyond).difference(led.confirmed)
        for first, last in fresh.ranges():
            led.confirmed.add_range(first, last)
        self.outbox.confirm(fresh)

    def _give_up(self) -> None:
        """The broker refused this gateway: it never sends again. Its devices keep producing
        until the end of the run, so the ledger shows what a misconfigured gateway loses."""
        self._client = None  # callbacks of the old client are ignored from now on
        self._inflight.clear()
        self._control.clear()
        self.link = Link.FAILED
        for name in ("health", "connect"):
            self._cancel(name)
        self.s.on_refused()

    def _requeue(self) -> None:
        for entry in self._inflight.values():
            self.outbox.put_back(entry.records)
        self._inflight.clear()
        self._control.clear()

    def _uplink_down(self) -> None:
        self._offline_since = now_ms()
        self._link_event(down=True)

    def drop(self) -> None:
        """Lose the uplink abruptly: shut the socket without DISCONNECT (so the broker
        publishes the will), keep producing, reconnect ``offline_for`` seconds later."""
        if self.link is not Link.ONLINE or self._client is None:
            return
        sock = self._client.socket()
        self._client = None  # paho notices the dead socket; its callbacks are ignored
        if isinstance(sock, socket.socket):  # an SSLSocket is one too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._requeue()
        self.ledger.drops += 1
        self.link = Link.OFFLINE
        self._uplink_down()
        self._at("connect", self.s.loop.time() + self.s.config.offline_for, self.connect)

    def close(self) -> None:
        """End of run: publish the retained ``offline``/``shutdown`` status, then DISCONNECT
        once it is acknowledged (no will). Not connected: just stop."""
        self._end_production()
        for name in ("tick", "health", "connect"):
            self._cancel(name)
        if self.link is Link.ONLINE and self._client is not None:
            self.link = Link.CLOSING
            self._publish_control("shutdown", self.status_topic,
                                  self._status(GatewayState.OFFLINE, "shutdown"), True)
        elif self.link is not Link.FAILED:
            self.abort()

    def abort(self) -> None:
        """Close the socket now, whatever the state (end of a run that ran out of time)."""
        self._cancel_timers()
        if self._client is not None:
            self.s.bridge.force_close(self._client)
            self._client = None
        if self.link is not Link.FAILED:
            self.link = Link.CLOSED

    @property
    def offline_reconnect_at(self) -> float | None:
        """Loop time of the pending reconnection of an offline gateway."""
        handle = self._timers.get("connect")
        return handle.when() if handle is not None and self.link is Link.OFFLINE else None


def describe(e: BaseException) -> str:
    """A short, stable text for a connection error (counted by text in the ledger)."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return f"TLS: {e.reason or e}"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host: {e.strerror}"
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    return str(e)
