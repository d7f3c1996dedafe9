"""Prometheus metrics of the collector: counters, gauges, one histogram, and the text endpoint.

The text exposition format (version 0.0.4) is small enough to write by hand, so the collector
needs no client library: ``# HELP`` / ``# TYPE`` lines, then ``name{label="value"} number``;
histograms as cumulative ``_bucket{le=...}`` plus ``_sum`` and ``_count``. The endpoint is a
stdlib ``ThreadingHTTPServer`` on its own thread answering ``GET /metrics``.

Every metric is updated from the pipeline's threads and read by the server thread; a lock per
metric keeps label maps consistent while they are walked.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Counter", "Gauge", "Histogram", "Metrics", "MetricsServer", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _labels(self, values: Labels) -> str:
        if not values:
            return ""
        pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(self.label_names, values,
                                                               strict=True))
        return "{" + pairs + "}"

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count, optionally per label values."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[Labels, float] = {} if labels else {(): 0.0}

    def inc(self, *labels: str, n: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + n

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def values(self) -> dict[Labels, float]:
        with self._lock:
            return dict(self._values)

    def lines(self) -> list[str]:
        return [f"{self.name}{self._labels(k)} {_number(v)}" for k, v in
                sorted(self.values().items())]


class Gauge(Counter):
    """A value that goes up and down; ``set`` it, or give a callback read at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = (),
                 read: Callable[[], float] | None = None) -> None:
        super().__init__(name, help_text, labels)
        self._read = read

    def set(self, value: float, *labels: str) -> None:
        with self._lock:
            self._values[labels] = value

    def read_from(self, read: Callable[[], float]) -> None:
        """Read the (unlabelled) value from ``read`` at each scrape."""
        self._read = read

    def replace(self, values: dict[Labels, float]) -> None:
        """Set every labelled value at once (labels not given disappear)."""
        with self._lock:
            self._values = dict(values)

    def lines(self) -> list[str]:
        if self._read is not None:
            self.set(self._read())
        return super().lines()


class Histogram(_Metric):
    """Observations in cumulative buckets (upper bounds in seconds)."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        self.bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect_left(self.bounds, value)] += 1
            self._sum += value

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self._counts)

    def quantile(self, q: float) -> float:
        """An upper bound of the ``q`` quantile (the bucket it falls in); inf past the last."""
        with self._lock:
            total = sum(self._counts)
            if total == 0:
                return math.nan
            seen = 0
            for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
                seen += n
                if seen >= q * total:
                    return bound
        return math.inf

    def lines(self) -> list[str]:
        with self._lock:
            counts, total_sum = list(self._counts), self._sum
        out, seen = [], 0
        for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
            seen += n
            out.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {seen}')
        out += [f"{self.name}_sum {total_sum!r}", f"{self.name}_count {seen}"]
        return out


def render(metrics: Iterable[_Metric]) -> str:
    """The text exposition of ``metrics``."""
    lines: list[str] = []
    for m in metrics:
        lines += m.header()
        lines += m.lines()
    return "\n".join(lines) + "\n"


class Metrics:
    """Every metric the collector exports (``firegate_collector_*``)."""

    def __init__(self) -> None:
        p = "firegate_collector_"
        self.messages = Counter(p + "messages_total", "MQTT messages received, by channel",
                                ("channel",))
        self.records_in = Counter(p + "records_received_total",
                                  "Records in accepted batches (before de-duplication)")
        self.records_stored = Counter(p + "records_stored_total",
                                      "Records written to the sink and committed in the ledger")
        self.duplicates = Counter(p + "duplicates_total",
                                  "Records dropped as already stored (same gateway and seq)")
        self.dead_letters = Counter(p + "dead_letters_total",
                                    "Messages, or single records of a batch, dead-lettered, "
                                    "by reason", ("reason",))
        self.site_mismatch = Counter(
            p + "site_mismatch_total",
            "Messages refused because the gateway named a site it is not bound to (the dead "
            "letters name the gateway)")
        self.confirmations = Counter(
            p + "confirmations_total",
            "stored confirmations to gateways, by result (sent, not_connected)", ("result",))
        self.resend_requests = Counter(
            p + "resend_requests_total", "resend commands sent for gaps in the ledger")
        self.records_lost = Counter(
            p + "records_lost_total",
            "Missing records a gateway said it no longer has (settled gaps)")
        self.gap_alarms = Counter(
            p + "gap_alarms_total",
            "records_missing alarms raised: a gap not closed within gap_grace_s")
        self.gateway_resets = Counter(
            p + "gateway_resets_total",
            "Gateways that began a new epoch: their store is new (docs/wire-protocol.md)")
        self.seq_regressions = Counter(
            p + "seq_regressions_total",
            "A gateway's announced last seq went backwards inside one epoch")
        self.records_dead_lettered = Counter(
            p + "records_dead_lettered_total",
            "Records dead-lettered alone (the rest of their batch was stored)")
        self.sink_errors = Counter(p + "sink_errors_total", "Failed sink writes, by kind",
                                   ("kind",))
        self.acks = Counter(p + "acks_total", "PUBACKs sent after the message was handled")
        self.stale_acks = Counter(p + "acks_skipped_total",
                                  "Acks not sent: the message came on an earlier connection "
                                  "(the broker redelivers it)")
        self.notifications = Counter(p + "notifications_total",
                                     "Webhook deliveries, by webhook and result",
                                     ("webhook", "result"))
        self.write_seconds = Histogram(
            p + "write_seconds", "Duration of successful sink writes",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
        self.latency_seconds = Histogram(
            p + "fire_alarm_latency_seconds",
            "Fire alarms: from MQTT receipt to committed (collector side)",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
        self.gateways = Gauge(p + "gateways", "Known gateways by state", ("state",))
        self.gaps = Gauge(p + "gap_records", "Records missing below the highest seq stored "
                          "(older than the grace time)")
        self.gap_ranges = Gauge(p + "gap_ranges", "Missing seq ranges (older than the grace time)")
        self.sites = Gauge(p + "sites", "Sites by risk colour", ("colour",))
        self.queue_depth = Gauge(p + "queue_depth", "Messages received and not yet handled")
        self.connected = Gauge(p + "mqtt_connected", "1 while connected to the broker")
        self.session_lost = Counter(
            p + "session_lost_total",
            "Connections on which the broker no longer had the collector's persistent session "
            "though it was expected (collector/session.py): messages may have been lost")
        self.notify_pending = Gauge(p + "notifications_pending", "Webhook deliveries waiting")
        self.webhook_errors = Counter(p + "webhook_errors_total",
                                      "Unexpected exceptions caught in a webhook sender "
                                      "(logged with their traceback; the sender goes on)",
                                      ("webhook",))
        self.webhook_restarts = Counter(p + "webhook_sender_restarts_total",
                                        "Webhook sender threads found dead and restarted",
                                        ("webhook", "lane"))
        self.webhook_sender_up = Gauge(p + "webhook_sender_up",
                                       "1 while the webhook's sender (lane) thread runs and "
                                       "looks at its queue", ("webhook", "lane"))
        # Bounds (issue 14 part 8): what a cap cut is counted, never silent.
        self.health_entries_cut = Counter(
            p + "health_entries_cut_total",
            "Health counter (driver x reason) and link entries not stored: beyond "
            "max_health_counters / max_health_links of one message", ("kind",))
        self.records_cut = Counter(
            p + "records_cut_total",
            "Records not stored by a bound (reason sources_per_gateway: a new source past "
            "max_sources_per_gateway; fire-class records are never cut)", ("reason",))
        self.store_pruned = Counter(
            p + "store_pruned_total",
            "Points deleted from the embedded store as older than [store] retention_days")
        # Forwarding upward (collector/uitd/upstream.py, docs/gb26875-upstream.md).
        self.upstream_uploads = Counter(
            p + "upstream_uploads_total",
            "GB/T 26875.3 uploads to a higher centre, by upstream and result (sent, confirmed, "
            "resent, unconfirmed, patrols, ...)", ("upstream", "result"))
        self.upstream_connected = Gauge(p + "upstream_connected",
                                        "1 while the link to the higher centre is up",
                                        ("upstream",))
        self.upstream_queue_depth = Gauge(p + "upstream_queue_depth",
                                          "Uploads queued for the higher centre, unconfirmed",
                                          ("upstream",))
        self.upstream_oldest_seconds = Gauge(
            p + "upstream_oldest_unconfirmed_seconds",
            "Age of the oldest upload waiting for the higher centre's confirm (0: none)",
            ("upstream",))
        self.upstream_dropped = Counter(
            p + "upstream_dropped_total",
            "Uploads dropped unsent: evicted (queue_max, lowest class first; fire last) or "
            "expired (queue_max_age_s)", ("upstream", "reason"))
        self.upstream_confirm_seconds = Histogram(
            p + "upstream_confirm_seconds", "From sending an upload upward to its confirm",
            (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0))

    def all(self) -> list[_Metric]:
        return [v for v in vars(self).values() if isinstance(v, _Metric)]

    def render(self) -> str:
        return render(self.all())


class MetricsServer:
    """``GET /metrics`` on ``host:port`` from a daemon thread (port 0: any free port)."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        owner = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = owner.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would flood the log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
