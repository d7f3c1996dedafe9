"""The sink interface: write points synchronously, all or nothing, idempotently.

A sink *reports*; it does not retry. The collector's pipeline calls :meth:`Sink.write` in a
worker thread and acknowledges the MQTT messages behind the points only after it returned.
On :class:`SinkError` it acknowledges nothing and retries with back-off (honouring
``retry_after_s``), so while the database is down the broker holds the data. Because point
times are idempotent (``collector.points``), writing the same points again after a partial
failure stores each of them once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from collector.points import Storable
from collector.sinks.config import SinkConfig

__all__ = ["RewriteGuarantee", "Sink", "SinkError", "open_sink"]


class SinkError(Exception):
    """A write failed as a whole: nothing may be acknowledged.

    ``retry_after_s`` is the server's ``Retry-After`` when it sent one (429, 503).
    ``permanent`` means this very write can never succeed (HTTP 4xx other than 408 and 429:
    a malformed body, a field type conflict, a bad token or a missing bucket), so retrying it
    only stalls the stream; ``status`` is the HTTP status when there was a response, so the
    pipeline can tell a bad point (400/422) from a configuration error (401/403/404).
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None,
                 permanent: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.permanent = permanent
        self.status = status

    def __repr__(self) -> str:
        return (f"SinkError({str(self)!r}, retry_after_s={self.retry_after_s!r}, "
                f"permanent={self.permanent!r}, status={self.status!r})")


@dataclass(frozen=True, slots=True)
class RewriteGuarantee:
    """What writing the same point again does on the configured database. The collector
    rewrites after a crash between a write and its ledger commit (docs/collector.md): on
    ``overwrite`` and ``deduplicated`` stores that is harmless, on ``duplicates`` it leaves a
    second sample of the same record."""

    kind: str
    """``overwrite``, ``deduplicated``, ``duplicates`` or ``unknown``."""
    detail: str


@runtime_checkable
class Sink(Protocol):
    """Where points are stored."""

    name: str
    """``"influx"`` or ``"sqlite"``; used in metrics and logs."""

    renders_lines: bool
    """True when :meth:`write` also takes :data:`~collector.points.Line`: record points the
    decode thread already rendered as line protocol (``lines_for_batch``). False: Points
    only."""

    def write(self, points: Sequence[Storable]) -> None:
        """Store ``points``; return only when the store confirmed all of them.

        Blocking (call it from a worker thread), synchronous (no background batching whose
        failures nobody sees), all or nothing from the caller's view (an exception means
        "assume none were stored"; a retry rewrites the ones that were), idempotent (the same
        point twice is stored once). Raises :class:`SinkError`.
        """
        ...

    def close(self) -> None:
        """Release connections and files. Idempotent."""
        ...

    def rewrite_guarantee(self) -> RewriteGuarantee:
        """Ask the database what a rewrite does (may do I/O; never raises)."""
        ...


def open_sink(config: SinkConfig) -> Sink:
    """The InfluxDB sink when ``config.influx_url`` is set, else the embedded SQLite store.

    influxdb-client is imported only here, when it is needed (``firegate[collector]``).
    """
    if config.influx_url is not None:
        from collector.sinks.influx import InfluxSink

        return InfluxSink(config)
    from collector.sinks.sqlite import SqliteSink

    return SqliteSink(config.sqlite_path, retention_days=config.retention_days)
