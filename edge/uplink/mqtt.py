"""A small asyncio shell over paho-mqtt: one session per connection, and the loop that keeps one up.

:class:`MqttSession` is one connection made with a fresh paho client (aiomqtt's shape, without
its dependency): ``publish`` returns a future resolved by the PUBACK, a refused PUBACK (MQTT 5
reason >= 0x80, such as 0x87 Not authorized) fails it with :class:`PublishRefused`, and a lost
connection fails every pending future with :class:`ConnectionLost`, so nothing waits forever.
paho's blocking parts (DNS, TCP, the TLS handshake) run in a worker thread; its network loop
runs in paho's own thread (``loop_start``), and every callback is marshalled onto the event loop
with ``call_soon_threadsafe``. A session never reconnects by itself (``reconnect_on_failure`` is
off): :class:`MqttUplink` owns that, with jittered exponential back-off, and a watchdog that
replaces a client whose network thread died or that hears nothing from the broker.

What the uplink can and cannot see (Mosquitto 2.0.11, measured):

* MQTT 5: a publish the ACL denies gets PUBACK 0x87 and then the broker drops the connection.
  The PUBACK arrives first, so the publisher gets :class:`PublishRefused`; publishes behind it
  fail with :class:`ConnectionLost`. Records are acknowledged to the outbox only on success.
* MQTT 3.1.1 has no reason code in PUBACK: the denied publish is acknowledged like a delivered
  one and the broker then drops the connection. The uplink cannot tell the two apart, so a
  batch denied under 3.1.1 is deleted from the outbox although nobody received it. Use MQTT 5
  (the default) wherever the broker has it; with 3.1.1 the ACL must allow the records topic.
* Under both, a refused CONNECT (bad password, 0x86/0x87 or 3.1.1 code 4/5) is a
  :class:`ConnectFailed` with the broker's reason, retried with back-off.
* Mosquitto grants every SUBSCRIBE and applies its ACL file only when delivering, so a
  gateway not allowed to read its ``cmd`` topic simply never gets a command. A broker that
  refuses the subscription (SUBACK >= 0x80) raises :class:`SubscribeRefused`; the command
  channel counts it and records keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge.config.uplink import MqttProtocol, UplinkConfig
from edge.drivers.base import Counters, LinkBoard, wall_ms
from protocols.wire import Channel, GatewayState, Status, encode_status, last_will, topic

__all__ = [
    "LINK",
    "RESERVED_SLOTS",
    "Backoff",
    "ConnectFailed",
    "ConnectionLost",
    "Message",
    "MqttError",
    "MqttSession",
    "MqttUplink",
    "PublishRefused",
    "Service",
    "SubscribeRefused",
    "WatchdogExpired",
]

log = logging.getLogger("edge.uplink")

LINK = "uplink"
RESERVED_SLOTS = 4
"""paho's in-flight window beyond the records window: a fire alarm, status, health, an ack."""
WATCHDOG_PERIOD_S = 1.0
WATCHDOG_SILENCE = 2.5
WATCHDOG_GRACE_S = 2.0
"""The watchdog gives up on a broker silent for 2.5 keepalives + 2 s. paho pings after one
keepalive of silence and closes after two, so this fires only when paho's own thread is
stuck (a blocked callback, a wedged socket) and cannot notice."""
STABLE_S = 30.0
"""A session that lasted this long resets the back-off."""
GOODBYE_S = 2.0
REFUSAL_EXPLAINS_S = 2.0
INBOX_SIZE = 100


class MqttError(Exception):
    """Anything that ends or refuses MQTT work; the message says what and why."""


class ConnectFailed(MqttError):
    """No session: TCP, TLS or the broker's CONNACK refused us (``reason_code`` if it did)."""

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class ConnectionLost(MqttError):
    """The connection ended while the operation was pending."""


class WatchdogExpired(MqttError):
    """The watchdog gave up on a session (dead network thread, silent broker)."""


class PublishRefused(MqttError):
    """The broker answered a publish with an MQTT 5 reason code >= 0x80."""

    def __init__(self, topic: str, reason_code: int, reason: str) -> None:
        super().__init__(f"broker refused the publish to {topic}: {reason} (0x{reason_code:02X})")
        self.topic = topic
        self.reason_code = reason_code
        self.reason = reason


class SubscribeRefused(MqttError):
    """The broker refused a subscription (SUBACK reason >= 0x80)."""

    def __init__(self, topic: str, reason_code: int, reason: str) -> None:
        super().__init__(f"broker refused the subscription to {topic}: {reason} "
                         f"(0x{reason_code:02X})")
        self.reason_code = reason_code


@dataclass(frozen=True, slots=True)
class Message:
    """A message received on a subscription."""

    topic: str
    payload: bytes


def _reason(rc: ReasonCode | int) -> tuple[int, str]:
    if isinstance(rc, ReasonCode):
        return rc.value, str(rc)
    return int(rc), paho.error_string(rc)


class MqttSession:
    """One MQTT connection over a fresh paho client. Create it on the event loop.

    ``await connect()``, then ``publish``/``subscribe``/``messages``; ``closed`` resolves with the
    :class:`MqttError` that ended the session (it never raises). ``disconnect()`` says goodbye
    (no last will); ``abort()`` drops the socket (the broker publishes the will).
    """

    def __init__(self, config: UplinkConfig, client_id: str, *,
                 will: tuple[str, bytes] | None = None) -> None:
        self.config = config
        self._loop = asyncio.get_running_loop()
        self._pending: dict[int, tuple[asyncio.Future[None], str]] = {}
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[MqttError] = self._loop.create_future()
        self.messages: asyncio.Queue[Message] = asyncio.Queue(INBOX_SIZE)
        self.dropped_messages = 0
        self.receive_maximum = 65_535
        self.last_contact = time.monotonic()
        self.last_contact_ms: int | None = None
        self.last_error: str | None = None
        self.refused: PublishRefused | None = None
        """The last publish the broker refused in this session."""
        self._refused_at = 0.0
        self._loop_thread: threading.Thread | None = None
        self._aborted = False
        self.client = self._make_client(client_id, will)
        """The paho client (for diagnostics; the session owns it)."""

    # -- set-up --------------------------------------------------------------------------

    def _make_client(self, client_id: str, will: tuple[str, bytes] | None) -> paho.Client:
        cfg = self.config
        v5 = cfg.protocol is MqttProtocol.V5
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else True, reconnect_on_failure=False)
        client.max_inflight_messages = cfg.max_inflight + RESERVED_SLOTS
        client.connect_timeout = cfg.connect_timeout_s
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_subscribe = self._cb_subscribe
        client.on_message = self._cb_message
        client.on_log = self._cb_log
        return client

    def _tls_context(self) -> ssl.SSLContext:
        cfg = self.config
        ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        if cfg.cert_file is not None:
            ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file) if cfg.key_file else None)
        if cfg.tls_insecure:
            ctx.check_hostname = False  # the chain is still verified (CERT_REQUIRED)
        return ctx

    async def connect(self) -> None:
        """Connect and wait for a successful CONNACK, or raise :class:`ConnectFailed`."""
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                try:
                    if cfg.tls:
                        self.client.tls_set_context(self._tls_context())
                    await self._loop.run_in_executor(None, self._blocking_connect)
                except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                    raise ConnectFailed(f"{cfg.url}: {_describe(e)}") from e
                self.client.loop_start()
                await self._connack
        except TimeoutError:
            self.abort()
            raise ConnectFailed(f"{cfg.url}: no CONNACK within {cfg.connect_timeout_s:g} s") \
                from None
        except BaseException:
            self.abort()
            raise

    def _blocking_connect(self) -> None:
        # In a worker thread: DNS, TCP and the TLS handshake block (paho's connect()).
        cfg = self.config
        extra: dict[str, Any] = {}
        if cfg.protocol is MqttProtocol.V5:
            extra["clean_start"] = True  # records are resent from the outbox, not the session
        self.client.connect(cfg.host, cfg.port, cfg.keepalive_s, **extra)
        if self._aborted:  # gave up on this attempt while we were blocked
            _close_socket(self.client)

    # -- paho callbacks (paho's thread) ----------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(fn, *args)

    def _cb_connect(self, _c: paho.Client, _u: object, _f: paho.ConnectFlags, rc: ReasonCode,
                    props: Any) -> None:
        self._loop_thread = threading.current_thread()
        receive_max = getattr(props, "ReceiveMaximum", None)
        self._post(self._on_connack, *_reason(rc), receive_max)

    def _cb_disconnect(self, _c: paho.Client, _u: object, _f: paho.DisconnectFlags,
                       rc: ReasonCode, _p: Any) -> None:
        code, text = _reason(rc)
        detail = f"{text} (0x{code:02X})" if code else "closed"
        if self.last_error and code:
            detail += f": {self.last_error}"
        self._post(self._on_lost, ConnectionLost(f"{self.config.url}: connection lost: {detail}"))

    def _cb_publish(self, _c: paho.Client, _u: object, mid: int, rc: ReasonCode,
                    _p: Any) -> None:
        self._post(self._on_puback, mid, *_reason(rc))

    def _cb_subscribe(self, _c: paho.Client, _u: object, mid: int, codes: list[ReasonCode],
                      _p: Any) -> None:
        self._post(self._on_suback, mid, codes)

    def _cb_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        try:
            name = msg.topic
        except UnicodeDecodeError:
            name = "<not UTF-8>"
        self._post(self._on_message, Message(name, bytes(msg.payload)))

    def _cb_log(self, _c: paho.Client, _u: object, level: int, text: str) -> None:
        # Every packet paho reads is logged as "Received <TYPE> ...": the only public view of
        # PINGRESP, which is what proves an idle link alive.
        if text.startswith("Received "):
            self.last_contact = time.monotonic()
            self.last_contact_ms = wall_ms()
        elif level in (paho.MQTT_LOG_ERR, paho.MQTT_LOG_WARNING):
            self.last_error = text

    # -- the same events on the event loop ------------------------------------------------

    def _on_connack(self, code: int, text: str, receive_max: int | None) -> None:
        if self._connack.done():
            return
        if code >= 0x80 or (code and self.config.protocol is MqttProtocol.V311):
            self._connack.set_exception(ConnectFailed(
                f"{self.config.url} refused the connection: {text} (0x{code:02X})", code))
        else:
            if receive_max:
                self.receive_maximum = int(receive_max)
            self._connack.set_result(None)

    def _on_lost(self, error: MqttError) -> None:
        if not self._connack.done():
            self._connack.set_exception(ConnectFailed(str(error)))
        # Mosquitto drops the connection right after refusing a publish (MQTT 5 and 3.1.1):
        # a refusal just before is the better explanation of the loss.
        recent = time.monotonic() - self._refused_at < REFUSAL_EXPLAINS_S
        self._end(self.refused if self.refused is not None and recent else error)

    def _on_puback(self, mid: int, code: int, text: str) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None or entry[0].done():
            return
        future, name = entry
        if code >= 0x80:
            self.refused = PublishRefused(name, code, text)
            self._refused_at = time.monotonic()
            future.set_exception(self.refused)
        else:
            future.set_result(None)

    def _on_suback(self, mid: int, codes: list[ReasonCode]) -> None:
        future = self._subacks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(codes)

    def _on_message(self, message: Message) -> None:
        try:
            self.messages.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped_messages += 1
            log.warning("uplink inbox full: dropped a message on %s", message.topic)

    # -- the API -----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._connack.done() and not self.closed.done()

    def publish(self, name: str, payload: bytes, *, retain: bool = False
                ) -> asyncio.Future[None]:
        """Publish at QoS 1; the future resolves on PUBACK, or fails with
        :class:`PublishRefused` (reason >= 0x80) or :class:`ConnectionLost`."""
        future: asyncio.Future[None] = self._loop.create_future()
        if self.closed.done():
            future.set_exception(ConnectionLost(f"not connected: {self.closed.result()}"))
            return future
        info = self.client.publish(name, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            future.set_exception(ConnectionLost(f"publish to {name}: "
                                                f"{paho.error_string(info.rc)}"))
        else:
            self._pending[info.mid] = (future, name)
        return future

    async def subscribe(self, name: str) -> None:
        """Subscribe at QoS 1; raises :class:`SubscribeRefused` or :class:`ConnectionLost`."""
        if self.closed.done():
            raise ConnectionLost(f"not connected: {self.closed.result()}")
        rc, mid = self.client.subscribe(name, qos=1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionLost(f"subscribe to {name}: {paho.error_string(rc)}")
        future: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._subacks[mid] = future
        codes = await future
        if not codes or codes[0].is_failure:
            code, text = _reason(codes[0]) if codes else (0x80, "no reason code")
            raise SubscribeRefused(name, code, text)

    def end(self, error: MqttError) -> None:
        """End the session with ``error`` (a service found it unusable); see ``closed``."""
        self._end(error)

    def problem(self) -> str | None:
        """What the watchdog should act on: a dead network thread or a silent broker."""
        if not self.is_open:
            return None
        thread = self._loop_thread
        if thread is None or not thread.is_alive():
            return "the MQTT network thread has stopped"
        keepalive = self.client.keepalive or self.config.keepalive_s  # the broker may override
        silent = time.monotonic() - self.last_contact
        if silent > WATCHDOG_SILENCE * keepalive + WATCHDOG_GRACE_S:
            return f"nothing received from the broker for {silent:.0f} s (keepalive {keepalive} s)"
        return None

    async def disconnect(self) -> None:
        """Say goodbye (DISCONNECT, so the broker drops the will) and stop the thread."""
        thread = self._loop_thread
        if self.is_open and thread is not None and thread.is_alive():
            self.client.disconnect()
            await self._loop.run_in_executor(None, thread.join, GOODBYE_S)
        self.abort()

    def abort(self) -> None:
        """Drop the connection now (no DISCONNECT: the broker publishes the will)."""
        self._aborted = True
        if not self._connack.done():
            self._connack.cancel()  # connect() is over; nobody will read a late answer
        _close_socket(self.client)
        self._end(ConnectionLost(f"{self.config.url}: closed"))

    def _end(self, error: MqttError) -> None:
        if not self.closed.done():
            self.closed.set_result(error)
        for future, _name in self._pending.values():
            if not future.done():
                future.set_exception(error if isinstance(error, ConnectionLost)
                                     else ConnectionLost(str(error)))
        self._pending.clear()
        for sub in self._subacks.values():
            if not sub.done():
                sub.set_exception(ConnectionLost(str(error)))
        self._subacks.clear()


def _close_socket(client: paho.Client) -> None:
    # paho's thread notices a closed socket at its next select() and ends (no reconnect).
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "no answer (TCP connect timed out)"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate check failed: {e.verify_message or e}"
    if isinstance(e, ssl.SSLError):
        return f"TLS failed: {e.reason or e}"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


class Backoff:
    """Exponential back-off with "equal jitter": the n-th delay is uniform in [d/2, d] with
    d = min(max, min * 2^n), and never below ``min_s``, so a fleet that lost its broker at
    the same moment does not come back in one wave."""

    def __init__(self, min_s: float, max_s: float, rng: Callable[[], float] = random.random
                 ) -> None:
        self.min_s, self.max_s, self._rng = min_s, max_s, rng
        self._n = 0

    def next(self) -> float:
        d = min(self.max_s, self.min_s * 2.0 ** min(self._n, 32))
        self._n += 1
        return max(self.min_s, d * (0.5 + 0.5 * self._rng()))

    def reset(self) -> None:
        self._n = 0


Service = Callable[[MqttSession], Awaitable[None]]
"""Work that lives as long as one session (the forwarder, the command channel). It is
cancelled when the session ends; raising ends the session (and a reconnect follows)."""


class MqttUplink:
    """Keeps one session up: connect, announce ``online``, run the services, watch, back off.

    ``await run(*services)`` until cancelled; cancelling it publishes the retained ``offline``
    status (reason ``shutdown``) and disconnects cleanly. The link ``uplink`` in ``links``
    follows the connection, with the last error as its detail.
    """

    def __init__(self, config: UplinkConfig, *, gateway_id: str, version: str,
                 site: str | None = None, links: LinkBoard | None = None,
                 counters: Counters | None = None, clock_ms: Callable[[], int] = wall_ms,
                 rng: Callable[[], float] = random.random) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.version = version
        self.site = site
        self.links = links if links is not None else LinkBoard()
        self.counters = counters if counters is not None else Counters()
        self._clock = clock_ms
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s, rng)
        self._status_topic = topic(gateway_id, Channel.STATUS)
        self.session: MqttSession | None = None
        """The connected session, None between sessions."""
        self.connects = 0
        self._last_contact_ms: int | None = None
        if config.protocol is MqttProtocol.V311:
            log.warning("uplink: MQTT 3.1.1 cannot report a refused publish; records the "
                        "broker denies are acknowledged and deleted (use MQTT 5)")

    @property
    def last_ack_ms(self) -> int | None:
        """Wall-clock ms of the last packet from the broker (any session); None: never."""
        if self.session is not None and self.session.last_contact_ms is not None:
            return self.session.last_contact_ms
        return self._last_contact_ms

    def _status(self, state: GatewayState, reason: str | None = None) -> bytes:
        return encode_status(Status(self.gateway_id, state, self._clock(),
                                    version=self.version, site=self.site, reason=reason))

    async def run(self, *services: Service) -> None:
        """Connect, serve, reconnect with back-off, forever (until cancelled)."""
        self.links.set(LINK, False, "connecting")
        try:
            while True:
                started = time.monotonic()
                error = await self._session(services)
                self.links.set(LINK, False, str(error)[:200])
                if time.monotonic() - started >= STABLE_S:
                    self._backoff.reset()
                await asyncio.sleep(self._backoff.next())
        finally:
            self.links.set(LINK, False, "stopped")

    async def _session(self, services: Sequence[Service]) -> MqttError:
        will = last_will(self.gateway_id, self._clock(), version=self.version, site=self.site)
        session = MqttSession(self.config, self.config.effective_client_id(self.gateway_id),
                              will=(self._status_topic, encode_status(will)))
        try:
            await session.connect()
        except ConnectFailed as e:
            self._last_contact_ms = session.last_contact_ms or self._last_contact_ms
            self.counters.inc("connect_failed")
            log.warning("uplink: %s", e)
            return e
        self.connects += 1
        self.session = session
        self.links.set(LINK, True, f"{self.config.url} (MQTT {self.config.protocol.value})")
        log.info("uplink: connected to %s", self.config.url)
        clean = False
        try:
            error = await self._serve(session, services)
            clean = True
            return error
        finally:
            self._last_contact_ms = session.last_contact_ms or self._last_contact_ms
            self.session = None
            if clean:
                session.abort()
            else:  # cancelled: the agent is stopping
                await self._goodbye(session)

    async def _serve(self, session: MqttSession, services: Sequence[Service]) -> MqttError:
        tasks = {asyncio.create_task(self._announce(session), name="uplink status"),
                 asyncio.create_task(self._watchdog(session), name="uplink watchdog"),
                 asyncio.create_task(_wait_closed(session), name=_CONNECTION)}
        tasks |= {asyncio.create_task(_call(svc, session), name=f"uplink {_name(svc)}")
                  for svc in services}
        try:
            while True:
                done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: t.get_name() != _CONNECTION):
                    if task.cancelled() or task.exception() is None:
                        continue  # a service may finish; the session goes on
                    exc = _unwrap(task.exception())
                    if isinstance(exc, MqttError):
                        log.warning("uplink: %s", exc)
                        self.counters.inc(_counter(exc))
                        return exc
                    log.error("uplink: %s failed", task.get_name(), exc_info=exc)
                    self.counters.inc("service_error")
                    return MqttError(f"{task.get_name()} failed: {exc!r}")
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)

    async def _announce(self, session: MqttSession) -> None:
        try:
            await session.publish(self._status_topic, self._status(GatewayState.ONLINE),
                                  retain=True)
        except PublishRefused as e:  # the will is probably refused too: say so, keep records
            self.counters.inc("status_refused")
            log.error("uplink: %s", e)

    async def _watchdog(self, session: MqttSession) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD_S)
            problem = session.problem()
            if problem is not None:
                raise WatchdogExpired(f"watchdog: {problem}; restarting the client")

    async def _goodbye(self, session: MqttSession) -> None:
        if session.is_open:
            try:
                async with asyncio.timeout(GOODBYE_S):
                    await session.publish(self._status_topic, self._status(
                        GatewayState.OFFLINE, "shutdown"), retain=True)
            except (MqttError, TimeoutError) as e:
                log.warning("uplink: offline status not confirmed: %s", e)
            await session.disconnect()
        session.abort()


_CONNECTION = "uplink connection"


def _unwrap(exc: BaseException | None) -> BaseException | None:
    """The MqttError inside a service's TaskGroup error, if that is all it holds."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = _leaves(exc)
        if leaves and all(isinstance(e, MqttError) for e in leaves):
            return leaves[0]
    return exc


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


async def _wait_closed(session: MqttSession) -> None:
    raise await asyncio.shield(session.closed)  # cancelling us must not cancel it


async def _call(service: Service, session: MqttSession) -> None:
    await service(session)


def _name(service: Service) -> str:
    owner = getattr(service, "__self__", None)
    return type(owner).__name__ if owner is not None else getattr(service, "__name__", "service")


def _counter(error: MqttError) -> str:
    if isinstance(error, WatchdogExpired):
        return "watchdog_restart"
    if isinstance(error, PublishRefused):
        return "publish_refused"
    return "connection_lost"
