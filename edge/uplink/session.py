"""One MQTT connection: a small asyncio shell over paho-mqtt (aiomqtt's shape, without its
dependency).

:class:`MqttSession` is one connection made with a fresh paho client. ``publish`` returns a
future resolved by the PUBACK. A refused PUBACK (MQTT 5 reason >= 0x80, such as 0x87 Not
authorized) fails it with :class:`PublishRefused`. A lost connection fails every pending future
with :class:`ConnectionLost`, so nothing waits forever. paho's blocking parts (DNS, TCP, the
TLS handshake) run in a worker thread; its network loop runs in paho's own thread
(``loop_start``), and every callback is marshalled onto the event loop with
``call_soon_threadsafe``. A session never reconnects by itself (``reconnect_on_failure`` is
off): :class:`edge.uplink.mqtt.MqttUplink` owns that.

What the uplink can and cannot see (Mosquitto 2.0.11, measured):

* MQTT 5: a publish the ACL denies gets PUBACK 0x87 and then the broker drops the connection.
  The PUBACK arrives first, so the publisher gets :class:`PublishRefused`; publishes behind it
  fail with :class:`ConnectionLost`. Records are acknowledged to the outbox only on success.
* MQTT 3.1.1 has no reason code in PUBACK: the denied publish is acknowledged like a delivered
  one and the broker then drops the connection. The uplink cannot tell the two apart, so a
  batch denied under 3.1.1 is deleted from the outbox although nobody received it. Use MQTT 5
  (the default) wherever the broker has it; with 3.1.1 the ACL must allow the records topic.
* MQTT 5: a publish nobody subscribes to gets PUBACK 0x10 (No matching subscribers; Mosquitto
  sends it when no session, connected or persistent, has a matching subscription). The
  message went nowhere, so the future fails with :class:`NoSubscribers` (the session goes
  on): no caller can take it for a delivery. Under 3.1.1 it looks like any PUBACK.
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
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge.config.uplink import MqttProtocol, UplinkConfig
from edge.drivers.base import wall_ms

__all__ = [
    "RESERVED_SLOTS",
    "ConnectFailed",
    "ConnectionLost",
    "Message",
    "MqttError",
    "MqttSession",
    "NoSubscribers",
    "PublishRefused",
    "SubscribeRefused",
    "WatchdogExpired",
]

log = logging.getLogger("edge.uplink")

RESERVED_SLOTS = 4
"""paho's in-flight window beyond the records window: a fire alarm, status, health, an ack."""
WATCHDOG_SILENCE = 2.5
WATCHDOG_GRACE_S = 2.0
"""The watchdog gives up on a broker silent for 2.5 keepalives + 2 s. paho pings after one
keepalive of silence and closes after two, so this fires only when paho's own thread is
stuck (a blocked callback, a wedged socket) and cannot notice."""
GOODBYE_S = 2.0
REFUSAL_EXPLAINS_S = 2.0
INBOX_SIZE = 100
NO_MATCHING_SUBSCRIBERS = 0x10
"""PUBACK reason code, MQTT 5.0 §3.4.2.1: accepted, but no subscription matches."""


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


class NoSubscribers(MqttError):
    """The broker answered a publish with PUBACK 0x10 (MQTT 5): it took the message, but no
    subscription matched it, so nobody receives it. Not a delivery, and not a reason to end
    the session; a retained message is still kept for later subscribers."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"no subscriber for {topic} (PUBACK 0x10)")
        self.topic = topic


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
        self._subacks: dict[int, tuple[asyncio.Future[None], str]] = {}
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[MqttError] = self._loop.create_future()
        self.messages: asyncio.Queue[Message] = asyncio.Queue(INBOX_SIZE)
        """Received messages, except those of a topic with an :meth:`inbox` of its own."""
        self._inboxes: dict[str, asyncio.Queue[Message]] = {}
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
        _no_delay(self.client)
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
        elif code == NO_MATCHING_SUBSCRIBERS:
            future.set_exception(NoSubscribers(name))
        else:
            future.set_result(None)

    def _on_suback(self, mid: int, codes: list[ReasonCode]) -> None:
        entry = self._subacks.pop(mid, None)
        if entry is None or entry[0].done():
            return
        future, name = entry
        if not codes or codes[0].is_failure:
            code, text = _reason(codes[0]) if codes else (0x80, "no reason code")
            future.set_exception(SubscribeRefused(name, code, text))
        else:
            future.set_result(None)

    def _on_message(self, message: Message) -> None:
        try:
            self._inboxes.get(message.topic, self.messages).put_nowait(message)
        except asyncio.QueueFull:
            self.dropped_messages += 1
            log.warning("uplink inbox full: dropped a message on %s", message.topic)

    # -- the API -----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._connack.done() and not self.closed.done()

    def publish(self, name: str, payload: bytes, *, retain: bool = False
                ) -> asyncio.Future[None]:
        """Publish at QoS 1; the future resolves on PUBACK (0x00), or fails with
        :class:`PublishRefused` (reason >= 0x80), :class:`NoSubscribers` (0x10) or
        :class:`ConnectionLost`."""
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

    def inbox(self, name: str) -> asyncio.Queue[Message]:
        """A queue of its own for the messages of topic ``name`` (exactly; the gateway
        subscribes to no wildcard), instead of :attr:`messages`. Ask for it before
        subscribing, so nothing arrives before it exists. Bounded like :attr:`messages`:
        what does not fit is dropped and counted (``dropped_messages``)."""
        queue = self._inboxes.get(name)
        if queue is None:
            queue = self._inboxes[name] = asyncio.Queue(INBOX_SIZE)
        return queue

    def subscribe(self, name: str) -> asyncio.Future[None]:
        """Subscribe at QoS 1: the SUBSCRIBE is queued now, the future resolves on the
        SUBACK or fails with :class:`SubscribeRefused` or :class:`ConnectionLost`. paho
        writes one connection's packets in order and the broker handles them in order, so
        a message published after this call reaches the broker after the subscription:
        the answer to it cannot miss the subscription, without waiting for the SUBACK."""
        future: asyncio.Future[None] = self._loop.create_future()
        if self.closed.done():
            future.set_exception(ConnectionLost(f"not connected: {self.closed.result()}"))
            return future
        rc, mid = self.client.subscribe(name, qos=1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            future.set_exception(ConnectionLost(f"subscribe to {name}: {paho.error_string(rc)}"))
        else:
            self._subacks[mid] = (future, name)
        return future

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
        for sub, _name in self._subacks.values():
            if not sub.done():
                sub.set_exception(ConnectionLost(str(error)))
        self._subacks.clear()


def _no_delay(client: paho.Client) -> None:
    """TCP_NODELAY (paho does not set it). Both directions of the link carry small packets
    now - records up, ``stored`` confirmations down, PUBACKs both ways - and with Nagle a
    PUBACK written while an earlier small packet waits for its ACK is held until the peer's
    delayed ACK (~40 ms): measured, a fifth of the records PUBACKs took 27-40 ms instead of
    under 1 ms, and a fire alarm waited behind them (docs/benchmarks.md)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
