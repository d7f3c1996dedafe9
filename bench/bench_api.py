"""The collector's HTTP API: how fast a fire alarm reaches the stream, and how fast the
alarm list answers with many open alarms.

1. **stream**: Mosquitto, the collector as a real subprocess (``python -m collector``) with
   ``[http]`` and the embedded SQLite store, ``--background`` records/s of fleet load (a
   separate ``firegate sim fleet`` process), and a probe gateway publishing one fire alarm
   every 50 ms, each from a new source (a new alarm). A stream client in this process
   (``GET /api/v1/stream``) notes when each alarm's ``raised`` event arrives. Measured: from
   the probe's publish to the event on the stream; also the same alarms' records appearing in
   the store, and the collector's own share from its ``/metrics`` (receipt -> committed, and
   how many sink writes, i.e. groups, the run took).
2. **list**: the real AlarmBook with ``--open`` open alarms (fed as the writer feeds it) behind
   the real API server (uvicorn, in this process on its own thread); ``GET
   /api/v1/alarms?state=active`` with the default limit (500) and the largest
   (``max_limit``, 1,000), ``--requests`` times each over one keep-alive connection, a
   site-restricted user's query (10 of the 200 sites), and every open alarm read page by
   page through the answers' ``next`` cursor; then ``state=closed``, ``cleared`` and ``all``
   with ``--closed`` closed alarms of the day before in the book's file.

    python bench/bench_api.py [--background 10000] [--probes 400] [--open 10000]
        [--closed 50000] [--requests 200] [--only stream list]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.alarms.book import AlarmBook, Signal
from collector.alarms.model import Alarm
from collector.alarms.store import AlarmStore, Stored
from collector.api.config import HttpConfig, UserConfig
from collector.api.server import ApiServer
from collector.registry import Registry
from protocols.wire import Bus, Event, EventType, Source, encode_batches
from tests.collector.conftest import CollectorProcess, toml
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port

FIREGATE = shutil.which("firegate") or str(Path(sys.executable).parent / "firegate")
TOKEN = "bench-" + "0123456789abcdef" * 3
FIRM = "firm-" + "fedcba9876543210" * 3


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> str:
    return (f"p50 {pct(values, 0.5):.1f} ms, p99 {pct(values, 0.99):.1f} ms, "
            f"max {max(values):.1f} ms")


def poll_store(path: Path, seen: dict[int, float], done: threading.Event) -> None:
    """Note when each probe seq first appears in the SQLite store (read-only, WAL): the
    pipeline's own delay, to set the stream's against."""
    from collector.sinks.sqlite import connect

    while not path.exists() and not done.is_set():
        time.sleep(0.01)
    conn = connect(path, read_only=True)
    while not done.is_set():
        rows = conn.execute("SELECT json_extract(fields, '$.seq') FROM points WHERE "
                            "gateway = 'probe-1' AND measurement = 'fg_event'").fetchall()
        now = time.perf_counter()
        for (seq,) in rows:
            seen.setdefault(int(seq), now)
        time.sleep(0.002)
    conn.close()


def collector_side(metrics_url: str) -> str:
    """The collector's own share, from its /metrics: fire alarms from MQTT receipt to committed
    (histogram, so p50/p99 as the bucket bound they fall in), and its sink writes (groups)."""
    values: dict[str, float] = {}
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("firegate_collector_") and " " in line:
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    prefix = "firegate_collector_fire_alarm_latency_seconds"
    count = values.get(f"{prefix}_count", 0.0)
    bounds = sorted((float(k.split('le="')[1].rstrip('"}')), v) for k, v in values.items()
                    if k.startswith(f"{prefix}_bucket") and "+Inf" not in k)

    def upto(q: float) -> str:
        for bound, n in bounds:
            if n >= q * count:
                return f"<= {bound * 1000:g} ms"
        return f"> {bounds[-1][0] * 1000:g} ms" if bounds else "?"

    writes = values.get("firegate_collector_write_seconds_count", 0.0)
    mean = values.get("firegate_collector_write_seconds_sum", 0.0) / max(writes, 1.0)
    return (f"collector side, MQTT receipt -> committed: {count:.0f} fire alarms, p50 "
            f"{upto(0.5)}, p99 {upto(0.99)}; {writes:.0f} sink writes (groups), mean "
            f"{mean * 1000:.1f} ms")


def stream(tmp: Path, broker: Mosquitto, background: float, probes: int) -> None:
    port = free_port()
    metrics_port = free_port()
    path = tmp / "stream.toml"
    path.write_text(toml({
        "collector": {"id": "stream", "state_dir": str(tmp / "stream"),
                      "snapshot_interval_s": 1.0, "gap_grace_s": 600.0},
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "share_group": "stream"},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "http": {"listen": f"127.0.0.1:{port}"},
        "user": [{"name": "bench", "token": TOKEN, "role": "operator"}],
    }))
    proc = CollectorProcess(path).start()
    arrived: dict[str, float] = {}
    ready = threading.Event()
    client = httpx.Client(timeout=httpx.Timeout(10, read=None))

    def read() -> None:
        with client.stream("GET", f"http://127.0.0.1:{port}/api/v1/stream",
                           headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            event = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    if event == "hello":
                        ready.set()
                    elif event == "alarm":
                        now = time.perf_counter()
                        doc = json.loads(line[6:])
                        if doc["what"] == "raised":
                            arrived.setdefault(doc["alarm"]["source"], now)

    threading.Thread(target=read, daemon=True).start()
    assert ready.wait(30), "no stream"
    stored: dict[int, float] = {}
    done = threading.Event()
    threading.Thread(target=poll_store, args=(tmp / "stream" / "store.sqlite3", stored, done),
                     daemon=True).start()
    seconds = probes * 0.05 + 6
    fleet = subprocess.Popen([FIREGATE, "sim", "fleet", "--broker",
                              f"mqtt://127.0.0.1:{broker.port}", "--gateways", "100",
                              "--total-rate", str(background), "--duration", str(seconds),
                              "--batch-interval", "0.5", "--alarm-rate", "0", "-q",
                              "--prefix", "bg"], stdout=subprocess.DEVNULL) \
        if background > 0 else None
    time.sleep(3.0)  # the background load running
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-1", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    sent: dict[str, float] = {}
    by_seq: dict[int, float] = {}
    for seq in range(1, probes + 1):
        source = f"panel/1-1/{seq}-0x00000102"
        e = Event(source=Source(source, Bus.GB26875, description="probe"),
                  type=EventType.FIRE_ALARM, receive_ms=time.time_ns() // 10**6, seq=seq)
        payload = encode_batches("probe-1", "probe-site", e.receive_ms, [e])[0]
        sent[source] = by_seq[seq] = time.perf_counter()
        pub.publish("firegate/v1/probe-1/records", payload, qos=1)
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while (len(arrived) < probes or len(stored) < probes) and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    if fleet is not None:
        fleet.wait(timeout=120)
    pub.disconnect()
    pub.loop_stop()
    client.close()
    side = collector_side(f"http://127.0.0.1:{metrics_port}/metrics")
    proc.stop()
    lat = [(arrived[s] - t) * 1000 for s, t in sent.items() if s in arrived]
    print(f"fire alarm publish -> on the stream, {background:,.0f} records/s background: "
          f"{len(lat)}/{probes} arrived, {summary(lat)}; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    lat = [(stored[q] - t) * 1000 for q, t in by_seq.items() if q in stored]
    print(f"  (the same alarms publish -> in the store, polled every 2 ms: {len(lat)}/{probes}, "
          f"{summary(lat)})", flush=True)
    print(f"  ({side})", flush=True)


def _closed_history(path: Path, n: int) -> None:
    """``n`` closed alarms (acknowledged, cleared, some resolved) over the day before, written
    to the book's file as its own rows (one transaction) before the book opens it."""
    day_ago = time.time_ns() // 1_000_000 - 86_400_000
    store = AlarmStore(path)
    rows = []
    for i in range(n):
        t = day_ago + i
        rows.append(Stored(Alarm(
            id=f"c{i:016x}", gateway=f"gw-{i % 200}", site=f"site-{i % 200:03d}",
            source=f"panel/2-1/{i}", description=f"喷淋泵 {i}", type="fault",
            priority="alarm", state="cleared", raised_ms=t, panel_ms=None, cleared_ms=t + 50,
            raise_count=1, acknowledged=True, acknowledged_by="duty", acknowledged_ms=t + 9,
            note=None, resolution="real" if i % 3 else None,
            resolved_by="duty" if i % 3 else None, resolved_ms=t + 60 if i % 3 else None,
            resolution_note=None, escalation_policy=None, escalation_step=-1),
            closed_ms=t + 50))
    store.save(rows, [])
    store.close()


def _serve_book(directory: Path, n_open: int, n_closed: int, port: int, ready: Any,
                stop: Any) -> None:
    """The book and the API server in a process of their own (the client's JSON parsing
    must not take the server's GIL)."""
    if n_closed:
        _closed_history(directory / "alarms.sqlite", n_closed)
    book = AlarmBook(directory / "alarms.sqlite").start()
    registry = Registry(directory / "registry.sqlite")
    t0 = time.perf_counter()
    for start in range(0, n_open, 1000):
        book.apply([Signal("raise", f"gw-{i % 200}", f"site-{i % 200:03d}", f"panel/1-1/{i}",
                           "fire_alarm", "fire", f"三层东走廊感烟探测器 {i}", stamp=(1, i + 1))
                    for i in range(start, min(n_open, start + 1000))])
    print(f"{n_open:,} alarms opened in {time.perf_counter() - t0:.1f} s", flush=True)
    config = HttpConfig("127.0.0.1", port, users=(
        UserConfig("bench", TOKEN, "operator"),
        UserConfig("firm", FIRM, "operator", ("site-00*",))))
    server = ApiServer(config, book=book, registry=registry.view).start_thread()
    ready.set()
    stop.wait()
    server.close()
    book.close()
    registry.close()


def cpu_ms(pid: int) -> float:
    """User + system CPU time of a process so far, in ms (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def list_alarms(tmp: Path, n_open: int, n_closed: int, requests: int) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ctx = multiprocessing.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_serve_book, args=(tmp, n_open, n_closed, port, ready, stop))
    child.start()
    try:
        assert ready.wait(300), "the API process did not start"
        url = f"http://127.0.0.1:{port}"
        big = HttpConfig("127.0.0.1", 0).max_limit
        cases: tuple[tuple[str, str, dict[str, Any]], ...] = (
            ("state=active (default limit 500)", TOKEN, {"state": "active"}),
            (f"state=active&limit={big} (max_limit)", TOKEN, {"state": "active", "limit": big}),
            ("state=active, a user of 10 of the 200 sites", FIRM, {"state": "active"}),
            (f"state=active&limit={big}, a user of 10 of the 200 sites", FIRM,
             {"state": "active", "limit": big}),
            (f"state=closed (default limit 500), {n_closed:,} closed", TOKEN,
             {"state": "closed"}),
            (f"state=cleared, a user of 10 of the 200 sites, {n_closed:,} closed", FIRM,
             {"state": "cleared"}),
            (f"state=all&limit={big}, a user of 10 of the 200 sites, {n_closed:,} closed",
             FIRM, {"state": "all", "limit": big}))
        for label, token, params in cases:
            times: list[float] = []
            size = 0
            count = 0
            cpu0 = cpu_ms(child.pid or 0)
            with httpx.Client(base_url=url, timeout=30,
                              headers={"Authorization": f"Bearer {token}"}) as c:
                for i in range(requests + 5):
                    t = time.perf_counter()
                    r = c.get("/api/v1/alarms", params=params)
                    elapsed = (time.perf_counter() - t) * 1000
                    assert r.status_code == 200
                    if i >= 5:  # warm-up left out
                        times.append(elapsed)
                    size = len(r.content)
                count = len(r.json()["alarms"])
            cpu = (cpu_ms(child.pid or 0) - cpu0) / (requests + 5)
            print(f"GET /api/v1/alarms?{label}, {n_open:,} open: {count:,} alarms, "
                  f"{size / 1024:,.0f} KiB, {summary(times)} (request to last byte); server "
                  f"CPU {cpu:.1f} ms a request; load average {os.getloadavg()[0]:.1f}",
                  flush=True)
        every_page(url, n_open, big, max(3, requests // 20))
    finally:
        stop.set()
        child.join(60)


def every_page(url: str, n_open: int, size: int, rounds: int) -> None:
    """Every open alarm, page by page (``limit=size``, then the answer's ``next``)."""
    totals: list[float] = []
    pages: list[float] = []
    seen = 0
    with httpx.Client(base_url=url, timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        for _ in range(rounds):
            params: dict[str, Any] = {"state": "active", "limit": size}
            ids: set[str] = set()
            t0 = time.perf_counter()
            while True:
                t = time.perf_counter()
                doc = c.get("/api/v1/alarms", params=params).json()
                pages.append((time.perf_counter() - t) * 1000)
                ids.update(a["id"] for a in doc["alarms"])
                if doc["next"] is None:
                    break
                params = {**params, **doc["next"]}
            totals.append((time.perf_counter() - t0) * 1000)
            seen = len(ids)
    assert seen == n_open, f"paging found {seen} of {n_open} alarms"
    print(f"every one of {n_open:,} open alarms through next, pages of {size:,}: "
          f"{len(pages) // rounds} pages, whole list {summary(totals)}; one page "
          f"{summary(pages)}; load average {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--background", type=float, default=10_000)
    ap.add_argument("--probes", type=int, default=400)
    ap.add_argument("--open", type=int, default=10_000)
    ap.add_argument("--closed", type=int, default=50_000,
                    help="closed alarms in the book's file (history for state=closed/all)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--only", nargs="*", choices=("stream", "list"), default=None)
    args = ap.parse_args()
    only = set(args.only or ("stream", "list"))
    with tempfile.TemporaryDirectory(prefix="bench-api-") as d:
        tmp = Path(d)
        if "list" in only:
            list_alarms(tmp / "list", args.open, args.closed, args.requests)
        if "stream" in only:
            with Mosquitto(tmp / "broker") as broker:
                stream(tmp, broker, args.background, args.probes)


if __name__ == "__main__":
    main()
