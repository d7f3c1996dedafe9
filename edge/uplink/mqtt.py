"""The loop that keeps one MQTT session up (:class:`MqttUplink`).

Each connection is a :class:`~edge.uplink.session.MqttSession` (see that module for what a
session does and what the uplink can and cannot see of a broker's refusals). The uplink
connects, announces the retained ``online`` status, runs the services that live as long as one
session (the forwarder, the command channel), and reconnects with jittered exponential
back-off. A watchdog replaces a client whose network thread died or that hears nothing from
the broker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from common.backoff import Backoff
from edge.config.uplink import MqttProtocol, UplinkConfig
from edge.drivers.base import Counters, LinkBoard, wall_ms
from protocols.wire import Channel, GatewayState, Status, encode_status, last_will, topic

from .session import (
    GOODBYE_S,
    RESERVED_SLOTS,
    ConnectFailed,
    ConnectionLost,
    Message,
    MqttError,
    MqttSession,
    NoSubscribers,
    PublishRefused,
    SubscribeRefused,
    WatchdogExpired,
)

__all__ = [
    "LINK",
    "RESERVED_SLOTS",
    "ConnectFailed",
    "ConnectionLost",
    "Message",
    "MqttError",
    "MqttSession",
    "MqttUplink",
    "NoSubscribers",
    "PublishRefused",
    "Service",
    "SubscribeRefused",
    "WatchdogExpired",
]

log = logging.getLogger("edge.uplink")

LINK = "uplink"
WATCHDOG_PERIOD_S = 1.0
STABLE_S = 30.0
"""A session that lasted this long resets the back-off."""


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
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s, jitter=0.5,
                                rng=rng)
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
        except NoSubscribers:
            pass  # retained all the same: the next subscriber gets it (MQTT 5.0 §3.3.1.3)
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
            except NoSubscribers:
                pass  # retained all the same
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
