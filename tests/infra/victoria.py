"""A real VictoriaMetrics (apt ``victoria-metrics``) on a free loopback port, stopped by PID.

It serves influxdb-client's ``/api/v2/write`` unchanged, which makes it the InfluxDB-protocol
server of the integration tests (see shared/reference/test-infrastructure.md). Its limits as a
stand-in: string fields are stored as 0, timestamps are cut to milliseconds, and duplicates
are kept unless ``-dedup.minScrapeInterval=1ms`` is given (it is, here). Samples older than
the retention period (1 day) are dropped silently, so tests write recent times.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.infra.ports import free_port

VICTORIA = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
WAIT_S = 20.0  # generous: a loaded CI machine; never a timing assertion


@dataclass
class VictoriaMetrics:
    """One server. ``start()``, ``stop()``, ``restart()`` (same port and data)."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    dedup: bool = True
    """Start with ``-dedup.minScrapeInterval=1ms`` (a rewrite merges); False: as installed
    (a rewrite keeps both samples)."""

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> VictoriaMetrics:
        if self.proc is not None:
            raise RuntimeError("already running")
        log = (self.directory / "victoria.log").open("ab")
        self.proc = subprocess.Popen(
            [VICTORIA, f"-httpListenAddr=127.0.0.1:{self.port}",
             f"-storageDataPath={self.directory / 'data'}", "-retentionPeriod=1d",
             "-search.latencyOffset=0s", "-selfScrapeInterval=0",
             *(["-dedup.minScrapeInterval=1ms"] if self.dedup else []),
             "-loggerLevel=ERROR"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                if self._get("/health").strip() == b"OK":
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = (self.directory / "victoria.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"victoria-metrics did not start:\n{text}")
            time.sleep(0.05)

    def _get(self, path: str, params: list[tuple[str, str]] | None = None) -> bytes:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=WAIT_S) as resp:
            body: bytes = resp.read()
            return body

    def force_flush(self) -> None:
        """Make just-written samples visible to queries (else after ~10 s)."""
        self._get("/internal/force_flush")

    def export(self, match: str = '{__name__=~"fg_.*"}') -> list[dict[str, Any]]:
        """Every series matching ``match`` with all its samples (``/api/v1/export``)."""
        self.force_flush()
        body = self._get("/api/v1/export", [("match[]", match)])
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def metric(self, name: str) -> float:
        """A value from the server's own ``/metrics`` (e.g. ``vm_rows_invalid_total{...}``)."""
        for line in self._get("/metrics").decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise KeyError(name)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop by PID (SIGKILL if it does not exit)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=WAIT_S)

    def restart(self) -> VictoriaMetrics:
        self.stop()
        return self.start()

    def __enter__(self) -> VictoriaMetrics:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
