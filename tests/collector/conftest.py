"""Helpers for the collector's tests: configs, a collector in-process or as a real subprocess,
reading the SQLite store back, and checking it against the fleet simulator's ledger."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from collector.app import Collector
from collector.config import CollectorConfig, load_config
from collector.points import Point, points_for_batch
from collector.sinks.sqlite import connect
from protocols.wire import Batch
from simulators.fleet import FleetReport
from tests.infra.mosquitto import Mosquitto

REPO = Path(__file__).resolve().parents[2]
WAIT = 30.0  # generous bound for a loaded machine; never a timing assertion


def toml(data: Mapping[str, Any]) -> str:
    """A TOML document for the small configs of these tests (tables, arrays of tables,
    strings, numbers, booleans, arrays of strings)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str | Path):
            return json.dumps(str(v), ensure_ascii=False)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(v)

    def table(prefix: str, t: Mapping[str, Any], array: bool = False) -> None:
        lines.append(f"[[{prefix}]]" if array else f"[{prefix}]")
        for k, v in t.items():
            if not isinstance(v, Mapping) and not (isinstance(v, list) and v and
                                                   isinstance(v[0], Mapping)):
                lines.append(f"{k} = {value(v)}")
        for k, v in t.items():
            if isinstance(v, Mapping):
                table(f"{prefix}.{k}", v)

    for name, section in data.items():
        if isinstance(section, list):
            for item in section:
                table(name, item, array=True)
        else:
            table(name, section)
    return "\n".join(lines) + "\n"


def config_data(state: Path, broker: Mosquitto | None = None, **sections: Any) -> dict[str, Any]:
    """A config document: state dir, the broker's plain port, metrics off; ``sections``
    are merged over it (``collector={...}``, ``mqtt={...}``, ``webhook=[...]``...)."""
    data: dict[str, Any] = {
        "collector": {"state_dir": str(state), "health_interval_s": 60.0,
                      "snapshot_interval_s": 0.5, "gap_grace_s": 0.0},
        "mqtt": {"reconnect_max_s": 2},
        "metrics": {"listen": ""},
        # Keep for ever: many tests store records at fixed 2024 times, which a 90-day
        # retention would delete at the collector's first tick (test_bounds.py sets its own).
        "store": {"retention_days": 0},
    }
    if broker is not None:
        data["mqtt"]["url"] = f"mqtt://127.0.0.1:{broker.port}"
    for name, section in sections.items():
        if isinstance(section, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **section}
        else:
            data[name] = section
    return data


def write_config(path: Path, data: Mapping[str, Any]) -> CollectorConfig:
    path.write_text(toml(data), encoding="utf-8")
    return load_config(path)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


async def async_wait_until(predicate: Callable[[], bool], what: str,
                           timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def running(config: CollectorConfig) -> Iterator[Collector]:
    """An in-process collector (plain threads), subscribed, closed on exit."""
    c = Collector(config).start()
    try:
        wait_until(c.ingest.subscribed.is_set, "the collector's subscriptions")
        yield c
    finally:
        c.close()


class CollectorProcess:
    """``python -m collector --config FILE`` as a real subprocess, stopped by PID."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.log = config_path.with_suffix(".log")

    def start(self) -> CollectorProcess:
        assert self.proc is None
        err = self.log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "--config", str(self.config_path),
             "--log-level", "warning"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
        err.close()
        ready = threading.Event()
        proc = self.proc

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.lines.append(line)
                if line.startswith("ready"):
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(WAIT):
            self.kill()
            raise AssertionError(f"collector not ready: {self.lines} "
                                 f"{self.log.read_text()[-2000:]}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, sig)  # by PID: the process this test started
        try:
            return proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=WAIT)

    def stop(self) -> int | None:
        return self.kill(signal.SIGTERM)


# -- reading the store back ------------------------------------------------------------------


def stored_records(store: Path) -> dict[str, Counter[int]]:
    """Per gateway: how many rows of each seq the store holds (fg_event and fg_value)."""
    conn = connect(store, read_only=True)
    try:
        rows = conn.execute(
            "SELECT gateway, json_extract(fields, '$.seq') FROM points "
            "WHERE measurement IN ('fg_event', 'fg_value')").fetchall()
    finally:
        conn.close()
    out: dict[str, Counter[int]] = {}
    for gw, seq in rows:
        out.setdefault(gw, Counter())[int(seq)] += 1
    return out


def stored_points(store: Path, measurement: str | None = None) -> list[Point]:
    conn = connect(store, read_only=True)
    try:
        sql = "SELECT measurement, tags, fields, time_ns FROM points"
        args: tuple[str, ...] = ()
        if measurement is not None:
            sql += " WHERE measurement = ?"
            args = (measurement,)
        rows = conn.execute(sql, args).fetchall()
    finally:
        conn.close()
    return [Point(m, tuple(sorted(json.loads(t).items())), tuple(json.loads(f).items()), ns)
            for m, t, f, ns in rows]


def missing_records(report: FleetReport, store: Path) -> dict[str, set[int]]:
    have = stored_records(store)
    out = {}
    for gw, ledger in report.gateways.items():
        lost = set(ledger.produced) - set(have.get(gw, Counter()))
        if lost:
            out[gw] = lost
    return out


def assert_store_matches(report: FleetReport, store: Path, *, values: bool = True) -> None:
    """Every produced record stored exactly once; with ``values``, every stored point equal to
    the point of the produced record (measurement, tags, fields, time)."""
    have = stored_records(store)
    for gw, ledger in report.gateways.items():
        seqs = have.get(gw, Counter())
        lost = sorted(set(ledger.produced) - set(seqs))
        assert set(seqs) == set(ledger.produced), (gw, lost[:20])
        assert max(seqs.values()) == 1, gw
    if not values:
        return
    by_key = {(p.tag("gateway"), p.field("seq")): p for m in ("fg_event", "fg_value")
              for p in stored_points(store, m)}
    for gw, ledger in report.gateways.items():
        assert ledger.records is not None
        for seq, record in ledger.records.items():
            (expected,) = points_for_batch(Batch(gw, ledger.site, 0, (record,)))
            got = by_key[(gw, seq)]
            assert (got.measurement, got.tags, got.time_ns) == \
                (expected.measurement, expected.tags, expected.time_ns), (gw, seq)
            assert dict(got.fields) == dict(expected.fields), (gw, seq)
