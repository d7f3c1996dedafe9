"""The whole collector: fleet -> Mosquitto -> collector -> sink, with acknowledgement after write.

Starts its own Mosquitto and (for ``--sink victoria``) VictoriaMetrics on free loopback ports,
and runs the collector as a real subprocess (``python -m collector``). Three figures:

1. **drain**: the fleet publishes ``--records`` into the broker while the collector is
   stopped (its persistent session queues them), then the collector starts and the time until
   the last record is stored is measured: the collector's own ceiling, without the fleet
   competing for the CPU. The collector's RSS is sampled through the run (memory flat?).
2. **live**: fleet and collector at once, ``--live-rate`` records/s offered for
   ``--live-seconds``; records stored per second of the run (everything on the same 2 cores).
3. **fire alarm latency**: ``--background`` records/s of fleet load (a separate ``firegate sim
   fleet`` process) plus a probe gateway publishing one fire alarm every 50 ms. Measured: from
   the probe's publish to the webhook request carrying it (a local HTTP server in this
   process; the collector queues the notification before the database write, so an alarm is
   not held by a slow database), and from the publish to the record being in the store (with
   ``--sink sqlite``: this process polls the store every millisecond; with VictoriaMetrics the
   collector's own receipt-to-committed histogram,
   ``firegate_collector_fire_alarm_latency_seconds``, is printed instead).

4. **soak**: ``--soak-rate`` records/s for ``--soak-seconds`` (the figure: 100,000/s for 10
   minutes) from a light publisher process that formats contract payloads from a template
   (checked once by the strict decoder) instead of simulating gateways, so the fleet's own
   CPU does not take the collector's share of the 2 cores. Every 10 s: records published and
   stored in the last 10 s, the backlog, the collector's RSS. Memory is flat when RSS stops
   growing while the backlog stays bounded.

    python bench/bench_collector.py [--sink sqlite|victoria] [--records 1000000]
        [--live-rate 100000] [--live-seconds 20] [--background 10000] [--probes 400]
        [--soak-rate 100000] [--soak-seconds 600] [--only drain live latency soak]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocols.wire import Bus, Event, EventType, Source, encode_batches
from simulators.fleet import FleetConfig, run_fleet
from simulators.fleet.runner import raise_nofile
from tests.collector.conftest import CollectorProcess, toml
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port
from tests.infra.victoria import VictoriaMetrics

EXTRA: dict[str, Any] = json.loads(os.environ.get("BENCH_COLLECTOR_CONFIG", "{}"))
"""Config overrides for experiments, e.g. '{"mqtt": {"receive_maximum": 256}}'."""
FIREGATE = shutil.which("firegate") or str(Path(sys.executable).parent / "firegate")


def config(tmp: Path, broker: Mosquitto, vm: VictoriaMetrics | None, name: str,
           **extra: Any) -> Path:
    data: dict[str, Any] = {
        "collector": {"id": name, "state_dir": str(tmp / name), "snapshot_interval_s": 1.0,
                      "gap_grace_s": 600.0},
        # A share group per phase: the stopped collector of an earlier phase keeps its session,
        # and Mosquitto would route half of a shared group's messages to it.
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "share_group": name},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
    }
    if vm is not None:
        data["influx"] = {"url": vm.url, "token": "bench"}
    for k, v in {**EXTRA, **extra}.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    path = tmp / f"{name}.toml"
    path.write_text(toml(data))
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(path: Path) -> dict[str, float]:
    text = path.read_text()
    port = int(text.split('listen = "127.0.0.1:')[1].split('"')[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        body = r.read().decode()
    out = {}
    for line in body.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_stored(path: Path, n: int, proc: CollectorProcess, samples: list[float]) -> float:
    """Seconds until the collector's ``records_stored_total`` reaches ``n`` (RSS sampled)."""
    start = time.monotonic()
    last = time.monotonic()
    while scrape(path).get("firegate_collector_records_stored_total", 0) < n:
        time.sleep(0.1)
        if time.monotonic() - last >= 2.0:
            samples.append(rss_mb(proc.pid))
            last = time.monotonic()
        if time.monotonic() - start > 900:
            raise SystemExit(f"not all {n} records stored after 900 s")
    return time.monotonic() - start


def drain(tmp: Path, broker: Mosquitto, vm: VictoriaMetrics | None, records: int) -> None:
    path = config(tmp, broker, vm, "drain")
    CollectorProcess(path).start().stop()  # the session and its subscriptions
    gateways = 200
    report = asyncio.run(run_fleet(FleetConfig(
        broker=f"mqtt://127.0.0.1:{broker.port}", gateways=gateways, records=records,
        rate=records / gateways / 10, batch_interval=1.0, max_batch=1000, seed=1,
        drain_timeout=120, delete_on="puback")))  # queued while no collector runs
    assert report.ok, report.to_json()["errors"]
    proc = CollectorProcess(path).start()
    samples = [rss_mb(proc.pid)]
    elapsed = wait_stored(path, report.produced, proc, samples)
    metrics = scrape(path)
    proc.stop()
    writes = metrics["firegate_collector_write_seconds_count"]
    mean_ms = metrics["firegate_collector_write_seconds_sum"] / writes * 1000
    print(f"drain: {report.produced:,} records queued in the broker "
          f"({report.totals()['messages']:,} messages), stored in {elapsed:.1f} s = "
          f"{report.produced / elapsed:,.0f} records/s; {writes:,.0f} writes, mean "
          f"{mean_ms:.1f} ms; RSS MB every 2 s: {', '.join(f'{s:.0f}' for s in samples)}",
          flush=True)


def live(tmp: Path, broker: Mosquitto, vm: VictoriaMetrics | None, rate: float,
         seconds: float) -> None:
    path = config(tmp, broker, vm, "live")
    proc = CollectorProcess(path).start()
    samples = [rss_mb(proc.pid)]
    gateways = 200
    start = time.monotonic()
    report = asyncio.run(run_fleet(FleetConfig(
        broker=f"mqtt://127.0.0.1:{broker.port}", gateways=gateways, rate=rate / gateways,
        duration=seconds, batch_interval=1.0, max_batch=1000, seed=2, drain_timeout=300)))
    samples.append(rss_mb(proc.pid))
    wait_stored(path, report.produced, proc, samples)
    elapsed = time.monotonic() - start
    proc.stop()
    print(f"live: offered {rate:,.0f} records/s for {seconds:.0f} s; fleet produced "
          f"{report.produced:,} ({report.produced / report.production_s:,.0f}/s); all stored "
          f"after {elapsed:.1f} s = {report.produced / elapsed:,.0f} records/s end to end; "
          f"RSS MB: {', '.join(f'{s:.0f}' for s in samples)}", flush=True)


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                now = time.perf_counter()
                self.rfile.read(int(self.headers["Content-Length"]))
                owner.arrivals.setdefault(self.headers["X-Firegate-Delivery"], now)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def poll_store(path: Path, seen: dict[int, float], done: threading.Event) -> None:
    """Note when each probe seq first appears in the SQLite store (read-only, WAL)."""
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
        time.sleep(0.001)
    conn.close()


def latency(tmp: Path, broker: Mosquitto, vm: VictoriaMetrics | None, background: float,
            probes: int) -> None:
    receiver = Receiver()
    path = config(tmp, broker, vm, "latency", webhook=[{
        "url": receiver.url, "secret": "bench-" + "0" * 32, "events": ["fire_alarm"],
        "restores": False}])
    proc = CollectorProcess(path).start()
    seconds = probes * 0.05 + 6
    fleet = subprocess.Popen([FIREGATE, "sim", "fleet", "--broker",
                              f"mqtt://127.0.0.1:{broker.port}", "--gateways", "100",
                              "--total-rate", str(background), "--duration", str(seconds),
                              "--batch-interval", "0.5", "--alarm-rate", "0", "-q",
                              "--prefix", "bg"], stdout=subprocess.DEVNULL)
    time.sleep(3.0)  # the background load running
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-1", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    src = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="probe")
    sent: dict[str, float] = {}
    stored_at: dict[int, float] = {}
    done = threading.Event()
    if vm is None:
        threading.Thread(target=poll_store, args=(tmp / "latency" / "store.sqlite3", stored_at,
                                                  done), daemon=True).start()
    for seq in range(1, probes + 1):
        e = Event(source=src, type=EventType.FIRE_ALARM, receive_ms=time.time_ns() // 10**6,
                  seq=seq)
        payload = encode_batches("probe-1", "probe-site", e.receive_ms, [e])[0]
        sent[f"event:probe-1:{seq}"] = time.perf_counter()
        pub.publish("firegate/v1/probe-1/records", payload, qos=1)
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while (len(receiver.arrivals) < probes or (vm is None and len(stored_at) < probes)) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    metrics = scrape(path)
    fleet.wait(timeout=120)
    pub.disconnect()
    pub.loop_stop()
    proc.stop()
    lat = sorted((receiver.arrivals[k] - t) * 1000 for k, t in sent.items()
                 if k in receiver.arrivals)

    def p(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    buckets = {k: v for k, v in metrics.items()
               if k.startswith("firegate_collector_fire_alarm_latency_seconds_bucket")}
    print(f"fire alarm publish -> webhook received, {background:,.0f} records/s background: "
          f"{len(lat)}/{probes} received, p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, "
          f"max {lat[-1]:.1f} ms, mean {statistics.mean(lat):.1f} ms", flush=True)
    if vm is None:
        lat = sorted((stored_at[int(k.rsplit(":", 1)[1])] - t) * 1000 for k, t in sent.items()
                     if int(k.rsplit(":", 1)[1]) in stored_at)
        print(f"fire alarm publish -> in the store (polled every 1 ms): {len(lat)}/{probes}, "
              f"p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {lat[-1]:.1f} ms", flush=True)
    print("  collector receipt -> committed histogram: " + json.dumps(
        {k.split('le="')[1].rstrip('"}'): v for k, v in buckets.items()}), flush=True)


SOAK_GATEWAYS = 200
SOAK_BATCH = 900  # ~119 KB: within the contract's 128 KiB
SOAK_RECORD = ('{"seq":%d,"k":"m","rt":%d,"src":{"id":"modbus/bus1/%d/pressure","bus":"modbus"},'
               '"q":"pressure","v":%s,"u":"MPa"}')


def soak_payload(gw: int, first_seq: int, now_ms: int) -> bytes:
    """One contract batch of SOAK_BATCH readings for gateway ``gw``, seqs from ``first_seq``."""
    recs = ",".join(SOAK_RECORD % (first_seq + i, now_ms, i % 16, repr(0.2 + (i % 97) / 1000))
                    for i in range(SOAK_BATCH))
    return (f'{{"v":1,"gw":"soak-{gw}","site":"soak-site-{gw % 20}","ts":{now_ms},'
            f'"recs":[{recs}]}}').encode()


def soak_publisher(port: int, rate: float, seconds: float, published: Any) -> None:
    """Child process: ``rate`` records/s as SOAK_BATCH-record messages, round robin over the
    gateways; ``published`` (a shared counter) counts records whose PUBACK arrived."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-publisher",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(64)

    def on_publish(*_args: Any) -> None:
        with published.get_lock():
            published.value += SOAK_BATCH

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    seqs = [1] * SOAK_GATEWAYS
    interval = SOAK_BATCH / rate
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        gw = n % SOAK_GATEWAYS
        client.publish(f"firegate/v1/soak-{gw}/records",
                       soak_payload(gw, seqs[gw], time.time_ns() // 10**6), qos=1)
        seqs[gw] += SOAK_BATCH
        n += 1
        delay = start + n * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    time.sleep(2)
    client.loop_stop()
    client.disconnect()


def soak(tmp: Path, broker: Mosquitto, vm: VictoriaMetrics | None, rate: float,
         seconds: float) -> None:
    from protocols.wire import decode_batch

    assert len(decode_batch(soak_payload(7, 1, time.time_ns() // 10**6)).records) == SOAK_BATCH
    path = config(tmp, broker, vm, "soak")
    proc = CollectorProcess(path).start()
    published = multiprocessing.Value("q", 0)
    pub = multiprocessing.Process(target=soak_publisher,
                                  args=(broker.port, rate, seconds, published))
    start = time.monotonic()
    pub.start()
    last_pub = last_stored = 0.0
    rss: list[float] = []
    print(f"soak: {rate:,.0f} records/s offered for {seconds:.0f} s; every 10 s: "
          "published/s, stored/s, backlog, collector RSS MB", flush=True)
    while pub.is_alive():
        time.sleep(10.0)
        stored = scrape(path).get("firegate_collector_records_stored_total", 0.0)
        now_pub = float(published.value)
        rss.append(rss_mb(proc.pid))
        t = time.monotonic() - start
        print(f"  t={t:5.0f} s  published {(now_pub - last_pub) / 10:9,.0f}/s"
              f"  stored {(stored - last_stored) / 10:9,.0f}/s  backlog {now_pub - stored:9,.0f}"
              f"  RSS {rss[-1]:.0f}", flush=True)
        last_pub, last_stored = now_pub, stored
    pub.join()
    total = float(published.value)
    wait_stored(path, int(total), proc, rss)
    elapsed = time.monotonic() - start
    proc.stop()
    half = rss[len(rss) // 2:]
    print(f"soak: {total:,.0f} records published, all stored after {elapsed:.0f} s = "
          f"{total / elapsed:,.0f} records/s overall; RSS MB first {rss[0]:.0f}, "
          f"max {max(rss):.0f}, second half {min(half):.0f}-{max(half):.0f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sink", choices=("sqlite", "victoria"), default="victoria")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--live-rate", type=float, default=100_000)
    ap.add_argument("--live-seconds", type=float, default=20)
    ap.add_argument("--background", type=float, default=10_000)
    ap.add_argument("--probes", type=int, default=400)
    ap.add_argument("--soak-rate", type=float, default=100_000)
    ap.add_argument("--soak-seconds", type=float, default=600)
    ap.add_argument("--only", choices=("drain", "live", "latency", "soak"), nargs="*",
                    help="parts to run (default: drain, live, latency; soak only when named)")
    args = ap.parse_args()
    raise_nofile(300)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with Mosquitto(tmp / "broker") as broker:
            vm = VictoriaMetrics(tmp / "vm").start() if args.sink == "victoria" else None
            try:
                print(f"sink: {args.sink}; {os.cpu_count()} CPUs", flush=True)
                if not args.only or "drain" in args.only:
                    drain(tmp, broker, vm, args.records)
                if not args.only or "live" in args.only:
                    live(tmp, broker, vm, args.live_rate, args.live_seconds)
                if not args.only or "latency" in args.only:
                    latency(tmp, broker, vm, args.background, args.probes)
                if args.only and "soak" in args.only:
                    soak(tmp, broker, vm, args.soak_rate, args.soak_seconds)
            finally:
                if vm is not None:
                    vm.stop()


if __name__ == "__main__":
    main()
