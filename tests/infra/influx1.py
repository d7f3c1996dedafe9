"""A real InfluxDB 1.6 (apt ``influxdb``, ``influxd``) on free loopback ports, stopped by PID.

InfluxDB 1.6 has no ``/api/v2/write`` (that came in 1.8), but it is the real InfluxDB storage
engine: exact nanosecond timestamps, string fields, and a point with the same series and time
overwriting the earlier one. Tests post line protocol made by ``collector.lineproto.to_line``
to its v1 ``/write`` and read it back with ``/query`` (InfluxQL), which proves what the
VictoriaMetrics stand-in cannot: strings, escaping and overwrite.
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

INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"
WAIT_S = 20.0

_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[[udp]]
  enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "warn"
"""


@dataclass
class Influx1:
    """One server with a database ``db``. ``write(body)``, ``query(q)``, ``stop()``."""

    directory: Path
    db: str = "firegate"
    port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Influx1:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "influxdb.conf"
        conf.write_text(_CONFIG.format(dir=self.directory, port=self.port,
                                       rpc_port=self.rpc_port))
        log = (self.directory / "influxd.log").open("ab")
        self.proc = subprocess.Popen([INFLUXD, "run", "-config", str(conf)], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as resp:
                    if resp.status == 204:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = (self.directory / "influxd.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"influxd did not start:\n{text}")
            time.sleep(0.05)
        self.query(f'CREATE DATABASE "{self.db}"')
        return self

    def write(self, body: str | bytes) -> tuple[int, str]:
        """POST line protocol (ns precision) to ``/write``: (HTTP status, response body)."""
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(
            f"{self.url}/write?" + urllib.parse.urlencode({"db": self.db, "precision": "ns"}),
            data=data, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=WAIT_S) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def query(self, q: str) -> list[dict[str, Any]]:
        """Run InfluxQL (``epoch=ns``); the ``series`` of the first statement."""
        data = urllib.parse.urlencode({"q": q, "db": self.db, "epoch": "ns"}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=WAIT_S) as resp:
            result = json.loads(resp.read())["results"][0]
        if "error" in result:
            raise RuntimeError(result["error"])
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    def rows(self, measurement: str) -> list[dict[str, Any]]:
        """Every point of ``measurement`` as a dict column -> value (tags and fields)."""
        out: list[dict[str, Any]] = []
        for s in self.query(f'SELECT * FROM "{measurement}"'):
            cols = s["columns"]
            out += [dict(zip(cols, values, strict=True)) for values in s["values"]]
        return out

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=WAIT_S)

    def __enter__(self) -> Influx1:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
