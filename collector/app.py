"""The collector's composition root: every part built and wired here, and nowhere else.

Threads, each with one job (house style: no class that owns everything):

* paho's network thread (:class:`collector.ingest.MqttIngest`): receives into ``inbox``;
* ``decoder`` (:class:`collector.ingest.Decoder`): strict decode, gateway check, points;
* ``writer`` (:class:`collector.writer.Writer`): de-duplicate, write, effects, commit, ack;
* two senders per webhook, fire alarms and the rest, and their watchdog
  (:class:`collector.notify.Notifier`);
* ``alarm-escalation``: escalation steps that come due (:class:`collector.alarms.book.
  AlarmBook`, docs/alarms.md);
* ``metrics``: the Prometheus endpoint.

:func:`run` supervises the decoder and the writer as named tasks of one
``asyncio.TaskGroup`` and stops everything on SIGTERM / SIGINT: the writer finishes the group
in hand (stored, committed, acknowledged), then the session is closed with its unacknowledged
messages kept by the broker. A part that fails ends the process with the error; nothing was
acknowledged that was not stored, so a supervisor (systemd) simply starts it again.

One collector process per state directory: the ledger keeps its intervals in memory, so a
second process on the same files would corrupt the accounting. A lock file enforces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from collector.alarms.book import AlarmBook
from collector.alarms.escalation import ack_url_base
from collector.config import CollectorConfig
from collector.confirm import Confirmer, ResendDesk
from collector.deadletter import DeadLetters
from collector.effects import Effects
from collector.ingest import Decoder, Inbound, MqttIngest, Prepared
from collector.ledger import SeqLedger
from collector.lineproto import lines_for_batch
from collector.metrics import Metrics, MetricsServer
from collector.notify import Notifier
from collector.points import points_for_batch
from collector.registry import Registry
from collector.risk import RiskBoard
from collector.session import MARKER_NAME as SESSION_MARKER
from collector.sinks.base import RewriteGuarantee, Sink, open_sink
from collector.uitd.pipeline import SplitAcker
from collector.uitd.upstream import Forwarding
from collector.uitd.wiring import build_centre
from collector.writer import Writer
from common.files import private_dir, private_file

if TYPE_CHECKING:
    from collector.api.server import ApiServer

__all__ = ["Collector", "CollectorError", "run"]

log = logging.getLogger("firegate.collector")
MAX_SNAPSHOT_GAPS = 50


class CollectorError(Exception):
    """The collector cannot start (state directory in use, store cannot be opened...)."""


class Collector:
    """Every part of one collector process, built from its config (nothing started yet)."""

    def __init__(self, config: CollectorConfig, *, sink: Sink | None = None) -> None:
        """``sink`` replaces the configured one (tests inject faults through it)."""
        self.config = config
        self.started_ms = time.time_ns() // 1_000_000
        private_dir(config.state_dir)  # owner only: every file in it (docs/collector.md)
        self._lock_file = _lock(config.state_dir)
        self.metrics = Metrics()
        self.sink = sink if sink is not None else open_sink(config.sink)
        self.ledger = SeqLedger(config.ledger_path)
        self.deadletters = DeadLetters(config.deadletter_path)
        self.registry = Registry(config.registry_path)
        self.risk = RiskBoard(config.risk, self.registry.conditions())
        self.notifier = Notifier(config.notify_path, config.webhooks, self.metrics) \
            if config.webhooks else None
        # Alarms and their escalation (docs/alarms.md): fed by the writer, read by the API.
        self.alarms = AlarmBook(config.alarms_path, config.escalation,
                                notify=self.notifier.enqueue if self.notifier else None,
                                config=config.alarms, reset_clears=config.risk.reset_clears,
                                ack_url_base=ack_url_base(config.http))
        pipe = config.pipeline
        self.inbox: queue.Queue[Inbound] = queue.Queue(maxsize=pipe.queue_size)
        # Decoded messages are ~10x their bytes: only what fills the next write groups waits.
        self.prepared: queue.Queue[Prepared] = queue.Queue(maxsize=2 * pipe.group_max_messages)
        self.ingest = MqttIngest(config.mqtt, self.inbox, self.metrics,
                                 session_marker=config.state_dir / SESSION_MARKER)
        # A sink that takes line protocol gets it from the decode thread: the writer thread,
        # the busier one, then only joins and posts (collector.lineproto.lines_for_batch).
        self.decoder = Decoder(self.inbox, self.prepared, self.metrics,
                               lines_for_batch if self.sink.renders_lines else points_for_batch)
        # Forwarding upward to higher centres as a UITD (collector/uitd/upstream.py).
        ups = config.gb26875.upstreams if config.gb26875 is not None else ()
        self.forwarding = Forwarding(config.state_dir, ups, self.metrics,
                                     alarms=self.alarms) if ups else None
        self.effects = Effects(registry=self.registry, risk=self.risk, notifier=self.notifier,
                               ledger=self.ledger, metrics=self.metrics, config=pipe,
                               connected_for=self._connected_for,
                               report_gaps=pipe.report_gaps, snapshot=self.snapshot,
                               collector_id=config.collector_id,
                               forward=self.forwarding.offer if self.forwarding else None,
                               alarms=self.alarms)
        self.writer = Writer(config=pipe, collector_id=config.collector_id,
                             prepared=self.prepared, sink=self.sink, ledger=self.ledger,
                             deadletters=self.deadletters, effects=self.effects,
                             metrics=self.metrics, acker=SplitAcker(self.ingest),
                             gateways=config.gateways,
                             confirmer=Confirmer(self.ingest.publish, config.collector_id,
                                                 self.metrics),
                             desk=ResendDesk(self.ingest.publish, self.ledger, self.metrics,
                                             after_s=pipe.resend_after_s,
                                             every_s=pipe.resend_every_s)
                             if pipe.report_gaps else None)
        # UITDs dialling in over GB/T 26875.3 feed the same writer (collector/uitd/).
        self.centre = build_centre(config, prepared=self.prepared, render=self.decoder.render,
                                   ledger=self.ledger, registry=self.registry,
                                   metrics=self.metrics)
        if self.centre is not None:  # its overflow joins the writer's groups (adaptive)
            self.writer.backlog = self.centre.take_waiting
        self.metrics.queue_depth.read_from(lambda: self.inbox.qsize() + self.prepared.qsize())
        self.metrics_server: MetricsServer | None = None
        if config.metrics_listen is not None:
            host, port = config.metrics_listen
            self.metrics_server = MetricsServer(self.metrics, host, port)
        self._threads: list[threading.Thread] = []
        self._last_rate: tuple[float, float] = (time.monotonic(), 0.0)
        self._closed = False
        self.rewrites: RewriteGuarantee | None = None
        """What a rewrite does on the database; None until the sink has answered."""
        # The HTTP API and the console (collector/api/), bound now: a port in use stops here.
        self.api = _api_server(self) if config.http is not None else None

    def _connected_for(self) -> float | None:
        since = self.ingest.connected_since
        return None if since is None or not self.ingest.connected else time.monotonic() - since

    # -- lifecycle ---------------------------------------------------------------------------

    def start_services(self) -> None:
        """Webhook senders, metrics endpoint, MQTT session (the decoder and writer loops are
        started by :meth:`start` or supervised by :func:`run`)."""
        if self.notifier is not None:
            self.notifier.start()
        self.alarms.start()
        if self.metrics_server is not None:
            self.metrics_server.start()
        if self.forwarding is not None:
            self.forwarding.start()
        self.ingest.start()
        threading.Thread(target=self._ask_rewrites, name="sink-probe", daemon=True).start()

    def _ask_rewrites(self) -> None:
        """What a rewrite does on the configured database (one small request, off the data
        path): shown by ``collector status``; a store that keeps duplicates is warned of."""
        guarantee = self.sink.rewrite_guarantee()
        self.rewrites = guarantee
        if guarantee.kind == "duplicates":
            log.warning("sink %s: %s", self.config.sink.describe(), guarantee.detail)
        else:
            log.info("sink rewrites: %s (%s)", guarantee.kind, guarantee.detail)

    def start(self) -> Collector:
        """Everything on plain threads (tests, benchmarks); :meth:`close` stops it."""
        self.start_services()
        for name, target in (("decoder", self.decoder.run), ("writer", self.writer.run)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.centre is not None:
            try:
                self.centre.start_thread()
            except Exception:  # [gb26875] listen: a port in use; nothing left running
                self.close()
                raise
        if self.api is not None:
            self.api.start_thread()
        return self

    def stop_loops(self) -> None:
        """Let the writer finish the group in hand, then stop both loops."""
        if self.api is not None:
            self.api.stop()  # open streams end; no acknowledgement arrives while we stop
        if self.centre is not None:
            self.centre.stop()  # no new uploads; what the writer holds is still confirmed
        self.writer.stop.set()
        self.decoder.stop.set()

    def close(self) -> None:
        """Stop and release everything; a final snapshot is written. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop_loops()
        for t in self._threads:
            t.join(timeout=30)
        if self.centre is not None:
            self.centre.join()
        if self.api is not None:
            self.api.close()
        self.ingest.close()
        self.alarms.close()  # before the notifier: its loop queues escalation steps
        if self.notifier is not None:
            self.notifier.close()
        if self.forwarding is not None:
            self.forwarding.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        with contextlib.suppress(Exception):
            now = time.time_ns() // 1_000_000
            body = self.snapshot(now)
            body["running"] = False
            self.registry.save_snapshot(self.config.collector_id, now, body)
        self.registry.close()
        self.ledger.close()
        self.deadletters.close()
        self.sink.close()
        self._lock_file.close()

    # -- the status snapshot -----------------------------------------------------------------

    def snapshot(self, now_ms: int) -> dict[str, object]:
        """What ``collector status`` shows about this process (saved every few seconds)."""
        m = self.metrics
        stored = m.records_stored.value()
        then, before = self._last_rate
        now = time.monotonic()
        rate = (stored - before) / (now - then) if now > then else 0.0
        self._last_rate = (now, stored)
        gaps = self.ledger.gaps() if self.config.pipeline.report_gaps else []
        return {
            "collector": self.config.collector_id, "pid": os.getpid(), "running": True,
            "started_ms": self.started_ms, "updated_ms": now_ms,
            "broker": self.config.mqtt.url, "client_id": self.config.mqtt.client_id,
            "connected": self.ingest.connected, "mqtt_error": self.ingest.last_error,
            "session_lost": {"count": self.ingest.session.count,
                             "last_ms": self.ingest.session.last_ms},
            "sink": self.config.sink.describe(), "sink_error": self.writer.sink_error,
            "sink_rewrites": None if self.rewrites is None else
            {"kind": self.rewrites.kind, "detail": self.rewrites.detail},
            "sink_down_since_ms": self.writer.sink_down_since_ms,
            "messages": int(sum(m.messages.values().values())),
            "records_received": int(m.records_in.value()), "records_stored": int(stored),
            "duplicates": int(m.duplicates.value()), "records_per_s": round(rate, 1),
            "records_cut": int(sum(m.records_cut.values().values())),
            "dead_letters": self.deadletters.count_by_reason(),
            "queue_depth": self.inbox.qsize() + self.prepared.qsize(),
            "notifications": self.notifier.counts() if self.notifier is not None else {},
            "webhooks": self.notifier.status() if self.notifier is not None else {},
            "alarms": {"open": sum(self.alarms.open_counts().values()),
                       "refused": dict(self.alarms.refused)},
            "upstreams": self.forwarding.status(now_ms) if self.forwarding is not None else [],
            "api": self.api.stats() if self.api is not None else None,
            "gap_ranges": len(gaps), "gap_records": sum(g.missing for g in gaps),
            "gaps": [{"gateway": g.gateway_id, "first": g.first, "last": g.last,
                      "since_ms": g.since_ms} for g in gaps[:MAX_SNAPSHOT_GAPS]],
        }


def _api_server(collector: Collector) -> ApiServer:
    """The API server for ``[http]`` (starlette and uvicorn, the ``collector`` extra, are
    imported only when it is configured)."""
    from collector.api.server import ApiServer

    http = collector.config.http
    assert http is not None
    extra = []
    if collector.centre is not None:  # the GB/T 26875.3 centre's commands (collector/uitd/)
        from collector.uitd.routes import uitd_routes
        extra = uitd_routes(collector.centre)
    try:
        return ApiServer(http, book=collector.alarms, registry=collector.registry.view,
                         extra_routes=extra)
    except OSError as e:  # ApiStartError: the message names the setting
        raise CollectorError(f"[http] {e}") from None


def _lock(state_dir: Path) -> IO[str]:
    private_file(state_dir / "collector.lock")  # 0600, a planted symlink refused
    f = open(state_dir / "collector.lock", "a+")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        owner = f.read().strip()
        f.close()
        raise CollectorError(f"state directory {state_dir} is used by another "
                             f"collector process ({owner or 'unknown pid'}); give each "
                             "collector its own [collector] state_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    return f


async def run(config: CollectorConfig, *,
              on_ready: Callable[[Collector], None] | None = None) -> None:
    """Run a collector until SIGTERM / SIGINT (or a part fails, which raises)."""
    collector = Collector(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        collector.start_services()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(asyncio.to_thread(collector.decoder.run), name="decoder")
            tg.create_task(asyncio.to_thread(collector.writer.run), name="writer")
            tg.create_task(_supervise(collector, stop, on_ready), name="supervisor")
            if collector.centre is not None:
                tg.create_task(collector.centre.serve(), name="gb26875")
            if collector.api is not None:
                tg.create_task(collector.api.serve(), name="http")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await asyncio.to_thread(collector.close)


async def _supervise(collector: Collector, stop: asyncio.Event,
                     on_ready: Callable[[Collector], None] | None) -> None:
    try:
        if on_ready is not None:
            centre = collector.centre  # "ready" also means UITDs can dial in
            while not stop.is_set() and not (collector.ingest.subscribed.is_set() and (
                    centre is None or centre.ready.is_set())):
                await asyncio.sleep(0.05)
            if not stop.is_set():
                on_ready(collector)
        await stop.wait()
    finally:
        collector.stop_loops()
