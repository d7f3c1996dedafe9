"""The control channel: commands down (``cmd``), acks and health up (``cmd/ack``, ``health``).

Every command that arrives gets exactly one ack, ``ok=false`` with a reason when it cannot be
run: undecodable (answered under the id :func:`protocols.wire.peek_command_id` recovers),
unknown to the contract, not supported by this gateway, stale (``ttl_s`` elapsed since its
``ts``), or refused by its handler (:class:`CommandError`). Only a payload without a usable id
goes unanswered, and is counted. ``ping`` and ``report_health`` are built in, and
``resend`` when the channel is given the outbox (:mod:`edge.uplink.resend`); the other
commands go to the handlers the drivers provide.

Commands run concurrently (a ``check_post`` waits minutes for an operator; a ``ping`` must not
wait for it) and belong to the session they arrived on: when it ends they are cancelled, since
their acks could not be sent. The subscription uses a clean session, so commands sent while
the gateway was offline are not replayed (the contract: a stale command is worse than none).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

from edge.drivers.base import CommandError, CommandHandler, Counters, wall_ms
from edge.outbox import Outbox
from protocols.wire import (
    Channel,
    Command,
    CommandAck,
    CommandName,
    Health,
    JsonValue,
    WireError,
    decode_command,
    encode_ack,
    encode_health,
    peek_command_id,
    topic,
)

from .resend import resend_handler
from .session import ConnectionLost, MqttError, MqttSession, NoSubscribers, SubscribeRefused

__all__ = ["BUILT_IN", "ControlChannel", "HealthFailed", "HealthSource"]

log = logging.getLogger("edge.uplink")

HealthSource = Callable[[], Awaitable[Health]]
"""Builds the gateway's health report now (the lead's composition root supplies it)."""
BUILT_IN = frozenset({CommandName.PING, CommandName.REPORT_HEALTH, CommandName.RESEND})
"""Commands the channel answers itself (``resend`` only when it has the outbox); drivers
cannot offer them."""
ERROR_MAX = 256  # CommandAck.error limit
MAX_RUNNING = 16


class ControlChannel:
    """Answers commands and publishes health; ``serve`` is a :class:`~.mqtt.Service`."""

    def __init__(self, *, gateway_id: str, handlers: Mapping[CommandName, CommandHandler],
                 health: HealthSource, health_interval_s: float = 60.0,
                 counters: Counters | None = None, outbox: Outbox | None = None,
                 clock_ms: Callable[[], int] = wall_ms) -> None:
        clash = BUILT_IN & set(handlers)
        if clash:
            raise ValueError(f"built-in commands cannot be replaced: {sorted(clash)}")
        self._gw = gateway_id
        own = {} if outbox is None else {CommandName.RESEND: resend_handler(outbox)}
        self._handlers = MappingProxyType({**handlers, **own})
        self._health = health
        self._interval = health_interval_s
        self._clock = clock_ms
        self.counters = counters if counters is not None else Counters()
        self._cmd_topic = topic(gateway_id, Channel.CMD)
        self._ack_topic = topic(gateway_id, Channel.CMD_ACK)
        self._health_topic = topic(gateway_id, Channel.HEALTH)
        self.answered = 0
        self.health_published = 0

    async def serve(self, session: MqttSession) -> None:
        """Subscribe, then answer commands and publish health until the session ends."""
        try:
            await session.subscribe(self._cmd_topic)
        except SubscribeRefused as e:  # records still flow; commands wait for the next session
            self.counters.inc("subscribe_refused")
            log.error("uplink: %s; no commands on this connection", e)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._health_loop(session), name="uplink health")
            running: set[asyncio.Task[None]] = set()
            while True:
                message = await session.messages.get()
                if message.topic != self._cmd_topic:
                    self.counters.inc("unexpected_topic")
                    continue
                if len(running) >= MAX_RUNNING:
                    tg.create_task(self._refuse_busy(session, message.payload))
                    continue
                task = tg.create_task(self._handle(session, message.payload))
                running.add(task)
                task.add_done_callback(running.discard)

    # -- health ------------------------------------------------------------------------------

    async def _health_loop(self, session: MqttSession) -> None:
        while True:  # at once on connect (the centre sees a fresh report), then periodically
            try:
                await self.publish_health(session)
            except ConnectionLost:
                pass  # the session is ending; the uplink cancels this loop
            except (MqttError, HealthFailed) as e:
                log.error("uplink: %s", e)
            await asyncio.sleep(self._interval)

    async def publish_health(self, session: MqttSession) -> None:
        """Build the health report and publish it; returns after its PUBACK. Raises
        :class:`HealthFailed` (the report) or :class:`~.mqtt.MqttError` (the publish)."""
        try:
            report = await self._health()
            if report.gateway_id != self._gw:
                raise ValueError(f"health of {report.gateway_id!r}, this is {self._gw!r}")
            payload = encode_health(report)
        except Exception as e:  # the report's builder is not ours to crash on
            self.counters.inc("health_failed")
            raise HealthFailed(f"health report failed: {e!r}") from e
        try:
            await session.publish(self._health_topic, payload)
        except NoSubscribers:
            self.counters.inc("health_unheard")  # nobody subscribes to it: nothing to retry
            return
        except MqttError:
            self.counters.inc("health_unsent")
            raise
        self.health_published += 1

    # -- commands ----------------------------------------------------------------------------

    async def _handle(self, session: MqttSession, payload: bytes) -> None:
        try:
            command = decode_command(payload)
        except WireError as e:
            cid = peek_command_id(payload)
            if cid is None:
                self.counters.inc("command_undecodable")
                log.warning("uplink: command without a usable id ignored: %s", e)
                return
            self.counters.inc("command_invalid")
            await self._ack(session, cid, error=f"invalid command: {e}")
            return
        now = self._clock()
        if command.ttl_s is not None and now > command.ts_ms + command.ttl_s * 1000:
            self.counters.inc("command_stale")
            age = (now - command.ts_ms) / 1000
            await self._ack(session, command.id, error=(
                f"stale: sent {age:.0f} s ago, ttl {command.ttl_s} s; not run"))
            return
        if command.cmd not in self._handlers and command.cmd not in _ANSWERED_HERE:
            self.counters.inc("command_unsupported")
            await self._ack(session, command.id,
                            error=f"{command.cmd.value} is not supported by this gateway")
            return
        try:
            result = await self._run(session, command)
        except CommandError as e:
            self.counters.inc("command_failed")
            await self._ack(session, command.id, error=str(e) or type(e).__name__)
        except ConnectionLost:
            self.counters.inc("ack_unsent")  # the session is ending; no way to answer
        except Exception as e:  # a handler bug must not take the channel down
            self.counters.inc("command_crashed")
            log.exception("uplink: command %s (%s) crashed", command.cmd.value, command.id)
            await self._ack(session, command.id, error=f"internal error: {e!r}")
        else:
            await self._ack(session, command.id, result=result)

    async def _run(self, session: MqttSession, command: Command) -> Mapping[str, JsonValue]:
        if command.cmd is CommandName.PING:
            # The gateway's clock in the answer shows the centre its offset (for sync_clock).
            return {"now_ms": self._clock()}
        if command.cmd is CommandName.REPORT_HEALTH:
            try:
                await self.publish_health(session)
            except ConnectionLost:
                raise
            except (HealthFailed, MqttError) as e:
                raise CommandError(str(e)) from e
            return {"published": True}
        return await self._handlers[command.cmd](command)

    async def _refuse_busy(self, session: MqttSession, payload: bytes) -> None:
        self.counters.inc("command_busy")
        cid = peek_command_id(payload)
        if cid is not None:
            await self._ack(session, cid, error=f"busy: {MAX_RUNNING} commands running")

    async def _ack(self, session: MqttSession, cid: str, *,
                   result: Mapping[str, JsonValue] | None = None,
                   error: str | None = None) -> None:
        now = self._clock()
        try:
            if error is None:
                ack = CommandAck(cid, True, now, result=result or None)
            else:
                ack = CommandAck(cid, False, now, error=_clip(error))
        except WireError as e:  # the handler's result is not contract JSON
            self.counters.inc("command_bad_result")
            ack = CommandAck(cid, False, now, error=_clip(f"invalid result: {e}"))
        try:
            await session.publish(self._ack_topic, encode_ack(ack))
        except NoSubscribers:
            self.counters.inc("ack_unheard")  # the sender is gone; it retries or gives up
            return
        except MqttError as e:
            self.counters.inc("ack_unsent")
            log.error("uplink: ack of %s: %s", cid, e)
            return
        self.answered += 1


_ANSWERED_HERE = frozenset({CommandName.PING, CommandName.REPORT_HEALTH})


class HealthFailed(Exception):
    """The health source raised, or returned another gateway's report (counted
    ``health_failed``); the message says which."""


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 1] + "…"
