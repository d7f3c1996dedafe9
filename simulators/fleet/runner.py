"""Run a fleet: build the gateways, connect, produce, drop some, drain, close, report.

One asyncio loop drives every gateway: paho clients through :class:`SocketBridge`, timers
through ``loop.call_at``. The phases of :func:`run_fleet`:

1. **check**: settings (already, in :class:`FleetConfig`), the CA file, file descriptors, and
   one TCP (and TLS) connection to the broker, so an unreachable broker is one clear
   :class:`FleetError` instead of thousands of retries;
2. **produce** for ``duration`` seconds or until ``records`` are made; gateways connect
   meanwhile (records wait in their outboxes), batches go out every ``batch_interval``
   (staggered over the fleet) and chosen gateways drop offline and catch up;
3. **drain** until every record is delivered - confirmed by a collector, or acknowledged by the
   broker with ``delete_on="puback"`` - (offline gateways come back first), at most
   ``drain_timeout`` seconds after the last one is due back;
4. **close**: each gateway publishes its retained ``offline``/``shutdown`` status and
   disconnects cleanly; whatever is still open after a few seconds is closed.

Every wait is bounded, so a run always ends, with a :class:`FleetReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .bridge import SocketBridge
from .config import BrokerAddress, FleetConfig
from .gateway import Link, Shared, VirtualGateway, describe, now_ms
from .ledger import FleetReport

__all__ = ["FleetError", "Progress", "preflight", "run_fleet"]

POLL = 0.05  # seconds between checks of the run's conditions
CLOSE_TIMEOUT = 5.0  # seconds for the shutdown statuses to be acknowledged
CONNECT_SLICE = 32  # gateways connected between two yields to the loop
DROP_WINDOW = (0.2, 0.6)  # drops happen in this part of the expected production time


class FleetError(Exception):
    """A run that cannot start: unreachable broker, unusable CA file, too few descriptors."""


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for a progress line."""

    elapsed_s: float
    produced: int
    delivered: int
    online: int
    gateways: int


async def run_fleet(config: FleetConfig, *, progress: Callable[[Progress], None] | None = None,
                    progress_interval: float = 5.0) -> FleetReport:
    """Run ``config`` against its broker and return the ledger of every gateway.

    Raises :class:`FleetError` before anything starts if the broker cannot be reached (or its
    TLS certificate is refused). Problems during the run (refused credentials, PUBACKs with
    failure codes, lost connections, a drain that ran out of time - with ``delete_on="stored"``
    and no collector confirming, for one) are in the report.
    """
    address = config.address
    context = _ssl_context(config)
    raise_nofile(config.gateways)
    await preflight(address, context, config.connect_timeout)
    fleet = _Fleet(config, address, context)
    return await fleet.run(progress, progress_interval)


def _ssl_context(config: FleetConfig) -> ssl.SSLContext | None:
    if not config.address.tls:
        return None
    try:
        return ssl.create_default_context(cafile=None if config.ca is None else str(config.ca))
    except (OSError, ssl.SSLError) as e:
        raise FleetError(f"cannot load the CA file {config.ca}: {e}") from None


def raise_nofile(gateways: int) -> None:
    """One socket per gateway: raise the soft RLIMIT_NOFILE to the hard limit if needed."""
    need = gateways + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise FleetError(f"{gateways} gateways need about {need} file descriptors, the hard "
                         f"limit is {hard}: raise it (ulimit -Hn, systemd LimitNOFILE=)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                else need, hard))


async def preflight(address: BrokerAddress, context: ssl.SSLContext | None,
                    timeout: float) -> None:
    """One TCP (and TLS) connection to the broker, closed at once; FleetError if it fails."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            address.host, address.port, ssl=context,
            server_hostname=address.host if context is not None else None), timeout)
    except (OSError, TimeoutError) as e:
        raise FleetError(f"cannot reach the broker at {address}: {describe(e)}") from None
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout)


class _Fleet:
    def __init__(self, config: FleetConfig, address: BrokerAddress,
                 context: ssl.SSLContext | None) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.fatal: BaseException | None = None
        self.bridge = SocketBridge(self.loop, self._fail)
        self.errors: Counter[str] = Counter()
        self._producing = config.gateways
        self._refused = 0
        shared = Shared(self.loop, self.bridge, config, address, context, self._guard,
                        self._production_end, self._refused_one)
        self.gateways = [VirtualGateway(shared, i) for i in range(1, config.gateways + 1)]
        self._drops: list[asyncio.TimerHandle] = []
        self._progress: Callable[[Progress], None] | None = None
        self._progress_every = 5.0
        self._next_progress = 0.0
        self._t0 = 0.0

    def _fail(self, error: BaseException) -> None:
        if self.fatal is None:
            self.fatal = error

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            try:
                fn()
            except Exception as e:  # stop the run with it, see _until
                self._fail(e)
        return guarded

    def _production_end(self) -> None:
        self._producing -= 1

    def _refused_one(self) -> None:
        self._refused += 1

    def _stop_production(self) -> None:
        for g in self.gateways:
            g.stop_production()

    def _schedule_drops(self) -> None:
        cfg, n = self.config, len(self.gateways)
        if cfg.offline_fraction <= 0:
            return
        rng = random.Random(f"firegate-fleet/{cfg.seed}/offline")
        count = min(n, max(1, round(cfg.offline_fraction * n)))
        span = cfg.expected_production_s
        for i in sorted(rng.sample(range(n), count)):
            at = self._t0 + rng.uniform(DROP_WINDOW[0] * span, DROP_WINDOW[1] * span)
            self._drops.append(self.loop.call_at(at, self._guard(self.gateways[i].drop)))

    async def _until(self, done: Callable[[], bool], deadline: float | None) -> bool:
        """Poll ``done`` until true (True) or the deadline (False); re-raise a fatal error."""
        while True:
            if self.fatal is not None:
                raise self.fatal
            if done():
                return True
            now = self.loop.time()
            if deadline is not None and now >= deadline:
                return False
            if self._progress is not None and now >= self._next_progress:
                self._next_progress = now + self._progress_every
                self._progress(self.snapshot())
            await asyncio.sleep(POLL)

    def snapshot(self) -> Progress:
        gws = self.gateways
        return Progress(self.loop.time() - self._t0,
                        sum(len(g.ledger.produced) for g in gws),
                        sum(len(g.ledger.delivered) for g in gws),
                        sum(1 for g in gws if g.link is Link.ONLINE), len(gws))

    async def run(self, progress: Callable[[Progress], None] | None,
                  every: float) -> FleetReport:
        cfg, loop, gws = self.config, self.loop, self.gateways
        self._progress, self._progress_every = progress, every
        started_ms = now_ms()
        self._t0 = t0 = loop.time()
        self._next_progress = t0 + every
        production_s = elapsed_s = 0.0
        end = None if cfg.production_s is None else t0 + cfg.production_s
        stop: asyncio.TimerHandle | None = None
        self.bridge.start()
        try:
            for k, g in enumerate(gws):
                g.start(t0, k / len(gws), end)
            self._schedule_drops()
            if end is not None:
                stop = loop.call_at(end, self._guard(self._stop_production))
            for k, g in enumerate(gws):
                g.connect()
                if k % CONNECT_SLICE == CONNECT_SLICE - 1:
                    await asyncio.sleep(0)
            # A broker that refuses every gateway (wrong password template...) ends the run.
            everyone = len(gws)
            await self._until(lambda: self._producing == 0 or self._refused == everyone, None)
            for g in gws:
                g.halt()
            production_s = loop.time() - t0
            if cfg.production_s is not None:  # records are credited up to the end, not later
                production_s = min(production_s, cfg.production_s)
            for handle in self._drops:
                handle.cancel()
            back = [t for g in gws if (t := g.offline_reconnect_at) is not None]
            deadline = max([loop.time(), *back]) + cfg.drain_timeout
            if not await self._until(lambda: all(g.settled for g in gws), deadline):
                waiting = sum(1 for g in gws if not g.settled)
                self.errors[f"drain timed out after {cfg.drain_timeout:g} s"] += waiting
            elapsed_s = loop.time() - t0
            for g in gws:
                g.close()
            await self._until(lambda: all(g.link is not Link.CLOSING for g in gws),
                              loop.time() + CLOSE_TIMEOUT)
        finally:
            if stop is not None:
                stop.cancel()
            for g in gws:
                g.abort()
            self.bridge.stop()
        for g in gws:
            g.ledger.by_priority = list(g.mix.counts)
        return FleetReport(cfg.summary(), started_ms, production_s, elapsed_s,
                           {g.id: g.ledger for g in gws}, self.errors)
