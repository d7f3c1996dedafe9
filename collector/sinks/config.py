"""Where the collector stores points: an InfluxDB-protocol server, or the embedded SQLite store.

:class:`SinkConfig` is plain data. The collector's TOML loader (``collector/config.py``,
``[influx]`` and ``[store]``) builds it through ``common.config.Table`` so errors name
the key; ``__post_init__`` repeats the few checks that protect the sinks themselves, for code
that builds a config by hand (tests, benchmarks, the pipeline demo).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["DEFAULT_RETENTION_DAYS", "DEFAULT_SQLITE_NAME", "MAX_POINTS_PER_WRITE", "SinkConfig"]

DEFAULT_SQLITE_NAME = "store.sqlite3"
"""File name of the embedded store inside the collector's state directory."""

MAX_POINTS_PER_WRITE = 5000
"""InfluxData's recommended batch size for the write API; a body stays around 1 MB."""

DEFAULT_RETENTION_DAYS = 90
"""How long the embedded store keeps a point (by point time); 0 keeps it for ever."""


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """Settings of :func:`collector.sinks.open_sink`.

    With ``influx_url`` set, points go to ``<influx_url>/api/v2/write`` (InfluxDB 2.x, 3.x,
    Cloud, 1.8+ and VictoriaMetrics all serve it); without it, to the SQLite file
    ``sqlite_path``. For InfluxDB 1.8 use ``token = "user:password"`` (or no token without
    auth) and ``bucket = "database/retention_policy"``; ``org`` is ignored there.
    """

    influx_url: str | None = None
    token: str | None = field(default=None, repr=False)
    """API token: a secret, left out of ``repr`` and :meth:`describe`. The config refuses an
    empty one, and one sent over ``http://`` beyond loopback without ``allow_plaintext``."""
    org: str = "firegate"
    bucket: str = "firegate"
    timeout_s: float = 10.0
    """Per HTTP request. A write that times out is retried by the pipeline (idempotent)."""
    sqlite_path: Path = Path(DEFAULT_SQLITE_NAME)
    max_points_per_write: int = MAX_POINTS_PER_WRITE
    retention_days: int = DEFAULT_RETENTION_DAYS
    """Embedded store only: points older than this are deleted (``SqliteSink.prune``); 0
    keeps them for ever. InfluxDB keeps its bucket's own retention."""
    ca_file: Path | None = None
    """Extra CA bundle for an ``https`` InfluxDB with a private CA."""
    verify_ssl: bool = True

    def __post_init__(self) -> None:
        if self.influx_url is not None:
            parts = urlsplit(self.influx_url)
            if "@" in parts.netloc:  # describe() logs the URL: no credentials in it, not echoed
                raise ValueError("influx url must not carry credentials; use token")
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"influx url must be http(s)://host[:port], got "
                                 f"{self.influx_url!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if not 1 <= self.max_points_per_write <= MAX_POINTS_PER_WRITE:
            raise ValueError(f"max_points_per_write must be 1..{MAX_POINTS_PER_WRITE}, "
                             f"got {self.max_points_per_write}")
        if not self.bucket:
            raise ValueError("bucket must not be empty")
        if self.retention_days < 0:
            raise ValueError(f"retention_days must be >= 0, got {self.retention_days}")

    @property
    def uses_influx(self) -> bool:
        """True when points go to an InfluxDB-protocol server."""
        return self.influx_url is not None

    def describe(self) -> str:
        """Where points go, for logs and ``collector status`` (no secrets)."""
        if self.influx_url is not None:
            return f"influx {self.influx_url} org={self.org} bucket={self.bucket}"
        return f"sqlite {self.sqlite_path}"
