"""The edge agent's composition root: every part built here and run in one TaskGroup.

Tasks (named, so a stack dump or a log line says which is which):

* one per driver (``panel/<name>``, ``modbus/<bus>``, ``ble``), each under a supervisor that
  restarts it with back-off if it ever ends or raises (a bug, not a field error: those the
  driver handles itself), counting ``crashed``: a poller that dies on one exception and never
  restarts is the classic way gateways lose data;
* ``rules-clock``: debounced thresholds maturing on time;
* ``uplink``: the MQTT session with the forwarder and the control channel as its services;
* ``state``: the technician's local view, flushed every second.

Records flow driver -> ``Pipeline.emit``/``submit`` (rules, outbox commit, local view) ->
outbox -> forwarder -> broker. A clean stop (SIGTERM) stops the drivers first, lets the
forwarder send what is stored (at most ``STOP_DRAIN_S``, when connected), then ends the rest.
Nothing here owns another part's state; the parts meet through the interfaces in
``edge/drivers/base.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from common.backoff import Backoff
from edge import __version__
from edge.commands import merge_handlers
from edge.config.load import GatewayConfig
from edge.drivers import build_drivers
from edge.drivers.base import Counters, DriverContext, LinkBoard, wall_ms
from edge.health import HealthProbe
from edge.outbox import Outbox, OutboxStats
from edge.pipeline import Pipeline
from edge.rules import RuleEngine
from edge.state import StateWriter
from protocols.wire import LinkState

if TYPE_CHECKING:
    from edge.uplink import Forwarder

__all__ = ["run_agent"]

log = logging.getLogger("firegate.agent")
RESTART_MIN_S, RESTART_MAX_S = 1.0, 60.0
STOP_DRAIN_S = 5.0
"""On a clean stop with the broker connected, longest wait for the outbox to empty."""


async def supervise(name: str, run: Callable[[], Awaitable[None]], counters: Counters) -> None:
    """Run ``run`` forever: restart it with back-off whenever it ends or raises; a run that
    lasted longer than the longest delay starts the back-off again from the shortest."""
    backoff = Backoff(RESTART_MIN_S, RESTART_MAX_S)
    while True:
        started = time.monotonic()
        try:
            await run()
            ended = "ended unexpectedly"
        except asyncio.CancelledError:
            raise
        except Exception:
            ended = "crashed"
            log.exception("%s: crashed", name)
        counters.inc("crashed")
        if time.monotonic() - started > RESTART_MAX_S:
            backoff.reset()
        delay = backoff.next()
        log.error("%s: %s; restarting in %.0f s", name, ended, delay)
        await asyncio.sleep(delay)


def outbox_snapshot(stats: OutboxStats) -> dict[str, Any]:
    return {
        "depth": {p.label: n for p, n in stats.depth.items()},
        "evicted": {p.label: n for p, n in stats.evicted.items() if n},
        "expired": {p.label: n for p, n in stats.expired.items() if n},
        "oldest_age_s": stats.oldest_age_s,
        "in_flight": stats.in_flight,
        # Acknowledged by the broker, kept until a collector confirms them stored.
        "sent_unconfirmed": stats.sent_unconfirmed,
        "oldest_unconfirmed_s": stats.oldest_unconfirmed_s,
        "foreign_confirms": stats.foreign_confirms,
        "last_seq": stats.last_seq,
        "epoch": f"{stats.epoch:016x}",
        "payload_bytes": stats.payload_bytes,
        "file_bytes": stats.file_bytes,
        "disk_full": stats.disk_full,
        "errors": dict(stats.errors),
    }


async def run_agent(cfg: GatewayConfig, *, stop: asyncio.Event | None = None) -> int:
    """Run until ``stop`` is set or SIGTERM/SIGINT; returns the process exit code."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    logging.getLogger("bthome_ble.parser").setLevel(logging.ERROR)  # one line per bad advert
    if cfg.modbus:
        from edge.drivers.modbus_adapter import quiet_pymodbus_logging

        quiet_pymodbus_logging()  # a frame dump per timeout; the driver counts them
    gw = cfg.gateway
    gw.data_dir.mkdir(parents=True, exist_ok=True)
    state = StateWriter(cfg.state_path, keep_events=cfg.state.keep_events)
    links = LinkBoard()
    counters: dict[str, Counters] = {"rules": Counters(), "agent": Counters()}
    rules = RuleEngine(cfg.rules, active=state.load_active(), counters=counters["rules"])
    started_ms = wall_ms()
    try:
        async with Outbox(cfg.outbox) as outbox:
            previous = state.load_conditions()
            pipeline = Pipeline(outbox, rules, state, conditions=previous)
            frozen = frozenset(previous)

            def make_ctx(name: str) -> DriverContext:
                counters[name] = Counters()
                return DriverContext(gw.id, pipeline.emit, counters[name], links,
                                     submit=pipeline.submit, previous=frozen)

            drivers = build_drivers(cfg, make_ctx)
            probe = HealthProbe(gw.id, outbox, gw.data_dir, counters=lambda: counters,
                                links=links)
            agent_info = {"pid": os.getpid(), "gateway_id": gw.id, "site": gw.site,
                          "version": __version__, "started_ms": started_ms,
                          "config": str(cfg.source) if cfg.source else None,
                          "drivers": [d.name for d in drivers]}
            uplink_view: Callable[[], dict[str, Any]] = dict
            forwarder: Forwarder | None = None
            async with asyncio.TaskGroup() as tg:
                producers = [tg.create_task(supervise(d.name, d.run, counters[d.name]),
                                            name=d.name) for d in drivers]
                producers.append(tg.create_task(
                    supervise("rules-clock", pipeline.run_rules_clock, counters["agent"]),
                    name="rules-clock"))
                if cfg.uplink is not None:
                    uplink_view, forwarder = _start_uplink(tg, cfg, outbox, drivers, probe,
                                                           links, counters)
                tg.create_task(_state_loop(cfg, state, outbox, links, counters, agent_info,
                                           uplink_view), name="state")
                log.info("agent running: gateway %s, drivers %s, uplink %s", gw.id,
                         ", ".join(d.name for d in drivers) or "none",
                         cfg.uplink.url if cfg.uplink else "not configured")
                await stop.wait()
                log.info("stopping")
                for task in producers:
                    task.cancel()
                await asyncio.wait(producers)
                link = links.get("uplink")
                if forwarder is not None and link is not None and link.state is LinkState.UP:
                    # Readings lingering for company go out now rather than at the next
                    # start (they would not be lost either way: they are in the outbox).
                    left = await forwarder.drain(STOP_DRAIN_S)
                    if left:
                        log.info("stopping with %d records still in the outbox", left)
                raise _Stop  # cancels every task; the uplink publishes "offline" as it goes
    except* _Stop:
        pass
    finally:
        state.close()
    return 0


class _Stop(Exception):
    """Raised inside the TaskGroup to cancel every task on a clean stop."""


def _start_uplink(tg: asyncio.TaskGroup, cfg: GatewayConfig, outbox: Outbox,
                  drivers: list[Any], probe: HealthProbe, links: LinkBoard,
                  counters: dict[str, Counters]
                  ) -> tuple[Callable[[], dict[str, Any]], Forwarder]:
    from edge.uplink import ControlChannel, Forwarder, MqttUplink

    assert cfg.uplink is not None
    gw = cfg.gateway
    counters["uplink"] = Counters()
    uplink = MqttUplink(cfg.uplink, gateway_id=gw.id, version=__version__, site=gw.site,
                        links=links, counters=counters["uplink"])
    forwarder = Forwarder(outbox, cfg.uplink, gateway_id=gw.id, site=gw.site,
                          counters=counters["uplink"])
    control = ControlChannel(gateway_id=gw.id, handlers=merge_handlers(drivers),
                             health=probe.health, health_interval_s=cfg.uplink.health_interval_s,
                             counters=counters["uplink"], outbox=outbox)
    tg.create_task(uplink.run(forwarder.serve, control.serve), name="uplink")

    def view() -> dict[str, Any]:
        link = links.get("uplink")
        return {"url": cfg.uplink.url if cfg.uplink else None,
                "state": link.state.value if link else "down",
                "detail": link.detail if link else None,
                "last_ack_ms": uplink.last_ack_ms, "connects": uplink.connects,
                "acked_records": forwarder.acked_records,
                "acked_batches": forwarder.acked_batches,
                "confirmed_records": forwarder.confirmed_records,
                "delete_on": cfg.uplink.delete_on.value if cfg.uplink else None}

    return view, forwarder


async def _state_loop(cfg: GatewayConfig, state: StateWriter, outbox: Outbox,
                      links: LinkBoard, counters: dict[str, Counters],
                      agent_info: dict[str, Any], uplink_view: Callable[[], dict[str, Any]]
                      ) -> None:
    """Flush the local view every ``flush_interval_s``; snapshots every
    ``snapshot_interval_s``. Failures are counted and retried: this is a view, not data."""
    next_snapshot = 0.0
    try:
        while True:
            now = time.monotonic()
            if now >= next_snapshot:
                next_snapshot = now + cfg.state.snapshot_interval_s
                state.set_snapshot("agent", agent_info)
                state.set_snapshot("links", {
                    name: {"state": i.state.value, "since_ms": i.since_ms, "detail": i.detail}
                    for name, i in links.snapshot().items()})
                state.set_snapshot("counters", {n: c.snapshot() for n, c in counters.items()})
                state.set_snapshot("outbox", outbox_snapshot(await outbox.stats()))
                state.set_snapshot("uplink", uplink_view())
            try:
                await asyncio.to_thread(state.flush)
            except Exception as exc:  # a full disk must not stop the agent
                counters["agent"].inc("state_write_failed")
                log.warning("local state not written: %s", exc)
            await asyncio.sleep(cfg.state.flush_interval_s)
    finally:
        with contextlib.suppress(Exception):
            state.flush()
