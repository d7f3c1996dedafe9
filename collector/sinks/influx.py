"""The InfluxDB sink: influxdb-client's synchronous write API, line protocol in chunks.

Why synchronous: the batching ``WriteApi`` buffers in a background thread and reports
failures only to a callback (its ``flush()`` is an upstream TODO), so a caller cannot know
when its points are stored. Here every :meth:`InfluxSink.write` returns only after the server
answered 2xx for every chunk, which is what the pipeline needs before it acknowledges MQTT
messages. Points are serialised by :func:`collector.lineproto.to_line` (one tested format,
and about twice as fast as building influxdb-client ``Point`` objects) and posted as one
``bytes`` body per chunk of at most ``max_points_per_write`` lines to ``/api/v2/write``
with nanosecond precision - served by InfluxDB 2.x, 3.x, Cloud, 1.8+ and VictoriaMetrics.

Errors become :class:`SinkError`: an HTTP error keeps its status, ``Retry-After`` and whether
retrying can help; a refused connection, a reset or a timeout is retryable. This sink never
retries by itself (the client's urllib3 retries are off): the pipeline owns the back-off.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime

import urllib3
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from collector.lineproto import to_line
from collector.points import Storable
from collector.sinks.base import RewriteGuarantee, SinkError
from collector.sinks.config import SinkConfig

__all__ = ["InfluxSink", "error_from_status", "parse_retry_after"]

_RETRYABLE_4XX = frozenset({408, 429})  # request timeout, too many requests
_NS: WritePrecision = WritePrecision.NS  # type: ignore[assignment]  # a str class attribute


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 §10.2.3): delay-seconds or an
    HTTP-date. None when absent or unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        now = time.time() if now_s is None else now_s
        return max(0.0, when.timestamp() - now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _header(headers: object, name: str) -> str | None:
    if headers is None:
        return None
    if isinstance(headers, Mapping):
        items = headers.items()
    else:
        try:
            items = dict(headers).items()  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return None
    lname = name.lower()
    for k, v in items:
        if str(k).lower() == lname:
            return str(v)
    return None


def error_from_status(status: int, reason: str, headers: object = None,
                      body: object = None) -> SinkError:
    """The :class:`SinkError` for an HTTP error response."""
    retry_after = parse_retry_after(_header(headers, "Retry-After"))
    permanent = 400 <= status < 500 and status not in _RETRYABLE_4XX
    detail = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    message = f"HTTP {status} {reason}".rstrip()
    if detail:
        message += f": {str(detail)[:300]}"
    return SinkError(message, retry_after_s=retry_after, permanent=permanent, status=status)


class InfluxSink:
    """Writes points to an InfluxDB-protocol server; see the module docstring."""

    name = "influx"
    renders_lines = True

    def __init__(self, config: SinkConfig) -> None:
        if config.influx_url is None:
            raise ValueError("InfluxSink needs influx_url")
        self.config = config
        # Nothing connects here: the first write opens the connection (Telegraf's rule:
        # construction validates, I/O happens when used).
        self._client = InfluxDBClient(
            url=config.influx_url, token=config.token or "", org=config.org,
            timeout=max(1, round(config.timeout_s * 1000)), verify_ssl=config.verify_ssl,
            ssl_ca_cert=str(config.ca_file) if config.ca_file is not None else None)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._lock = threading.Lock()
        self._closed = False

    def write(self, points: Sequence[Storable]) -> None:
        """Post ``points`` in chunks; return when the server confirmed every chunk. A
        :data:`~collector.points.Line` is posted as it is."""
        if not points:
            return
        try:
            lines = [p if p.__class__ is str else to_line(p)  # type: ignore[arg-type]
                     for p in points]
        except ValueError as e:
            raise SinkError(f"point has no line-protocol form: {e}", permanent=True) from e
        n = self.config.max_points_per_write
        with self._lock:
            if self._closed:
                raise RuntimeError("write on a closed InfluxSink")
            for i in range(0, len(lines), n):
                self._post("\n".join(lines[i:i + n]).encode("utf-8"))

    def _post(self, body: bytes) -> None:
        try:
            self._write_api.write(bucket=self.config.bucket, org=self.config.org, record=body,
                                  write_precision=_NS)
        except ApiException as e:
            if not e.status:
                raise SinkError(f"no response: {e.reason}") from e
            raise error_from_status(int(e.status), str(e.reason or ""), e.headers,
                                    e.body) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            # Refused, reset, DNS, TLS or timeout: the server may be back on the next try.
            raise SinkError(f"cannot reach {self.config.influx_url}: {e}") from e
        except InfluxDBError as e:
            raise SinkError(f"write failed: {e}") from e

    def rewrite_guarantee(self) -> RewriteGuarantee:
        """InfluxDB (its ``/ping`` names a version) overwrites a point with the same series
        and time; VictoriaMetrics (no version; it serves ``/flags``) keeps both samples unless
        it runs with ``-dedup.minScrapeInterval``."""
        url = self.config.influx_url
        try:
            version = self._client.version()
        except Exception as e:  # the server is down or says something odd: tell, not fail
            return RewriteGuarantee("unknown", f"{url}: no answer to /ping ({e})"[:300])
        if version and version != "unknown":
            return RewriteGuarantee("overwrite", f"InfluxDB {version}: a point with the same "
                                    "series and time overwrites the earlier one")
        flags = self._get("/flags")
        if flags is None:
            return RewriteGuarantee("unknown", f"{url} does not say what it is (no InfluxDB "
                                    "version, no VictoriaMetrics /flags)")
        m = re.search(r'^-dedup\.minScrapeInterval="?([^"\s]*)"?', flags, re.MULTILINE)
        if m and m.group(1) not in ("", "0", "0s", "0ms"):
            return RewriteGuarantee("deduplicated", "VictoriaMetrics with "
                                    f"-dedup.minScrapeInterval={m.group(1)}: samples of the "
                                    "same series and time are merged")
        return RewriteGuarantee("duplicates", "VictoriaMetrics without "
                                "-dedup.minScrapeInterval: a point written again after a "
                                "collector crash is stored twice; start it with "
                                "-dedup.minScrapeInterval=1ms")

    def _get(self, path: str) -> str | None:
        """A small GET on the server (its TLS settings), or None."""
        import ssl
        import urllib.request

        assert self.config.influx_url is not None
        context = None
        if self.config.influx_url.startswith("https"):
            context = ssl.create_default_context(
                cafile=str(self.config.ca_file) if self.config.ca_file else None)
            if not self.config.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(self.config.influx_url.rstrip("/") + path,
                                        timeout=self.config.timeout_s,
                                        context=context) as r:
                return str(r.read(65536).decode("utf-8", "replace"))
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Close the HTTP connections. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._write_api.close()  # type: ignore[no-untyped-call]
            self._client.close()  # type: ignore[no-untyped-call]
