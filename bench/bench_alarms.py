"""Alarms and escalation (issue 15): three figures, recorded in docs/benchmarks.md.

Starts its own Mosquitto on a free loopback port and runs the collector as a real subprocess
(``python -m collector``); the webhook receivers are local HTTP servers in this process.

1. **step-0 latency**: a probe gateway publishes a new fire alarm (its own source each time,
   so each opens an alarm) every 50 ms. Measured per alarm from the publish to the POST
   received, for the event notification (``[[webhook]] events = ["fire_alarm"]``) and for the
   escalation's step 0 (``after_s = 0``, a webhook with ``events = []``). In alternating
   rounds without any ``[[escalation]]`` (the event notification's latency before this issue)
   and with one, so the load of a shared machine weighs on both alike.
   The publish precedes the record being stored, so these bound "stored -> received" above.
2. **1,000 escalations due in the same second**: one batch of 1,000 fire alarms, a policy
   whose only step is ``after_s = 5``. Measured from the due time (raised + 5 s) to the
   step's queueing (the body's ``time_ms``) and to its POST being received, for all 1,000.
3. **apply throughput**: an :class:`~collector.alarms.book.AlarmBook` (in this process, its
   file on this disk, ``synchronous=FULL``) holding 10,000 open alarms takes re-raises and
   clears of them, in groups of 1 and of 100 signals per ``apply`` (one transaction each).

    python bench/bench_alarms.py [--probes 400] [--mass 1000] [--open 10000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.alarms.book import AlarmBook, Signal
from protocols.wire import Bus, Event, EventType, Source, encode_batches
from tests.collector.conftest import CollectorProcess
from tests.infra.mosquitto import Mosquitto

SECRET = "bench-" + "0" * 40


class Receiver:
    """A webhook endpoint recording each body and when it arrived (time.time())."""

    def __init__(self) -> None:
        self.bodies: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                now = time.time()
                with owner.lock:
                    owner.bodies.append((now, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def count(self) -> int:
        with self.lock:
            return len(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start(tmp: Path, broker: Mosquitto, name: str, **sections: Any) -> CollectorProcess:
    data: dict[str, Any] = {
        "collector": {"id": name, "state_dir": str(tmp / name), "gap_grace_s": 600.0},
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "client_id": f"bench-{name}",
                 "share_group": f"g-{name}"},
        "metrics": {"listen": ""}, **sections}
    path = tmp / f"{name}.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return CollectorProcess(path).start()


def hook(name: str, r: Receiver, events: list[str]) -> dict[str, Any]:
    return {"name": name, "url": r.url, "secret": SECRET, "events": events, "restores": False}


def publisher(broker: Mosquitto, client_id: str) -> mqtt.Client:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    return pub


def wait(predicate: Any, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def pct(values: list[float]) -> str:
    v = sorted(values)
    if not v:
        return "none"
    return (f"p50 {v[len(v) // 2]:.1f} ms, p99 {v[min(len(v) - 1, int(0.99 * len(v)))]:.1f} "
            f"ms, max {v[-1]:.1f} ms (n={len(v)})")


def latency(tmp: Path, broker: Mosquitto, probes: int, rounds: int = 4) -> None:
    """Alternating rounds without and with escalation, so a shared machine's load drifts
    over both alike."""
    events = {False: Receiver(), True: Receiver()}
    duty = {False: Receiver(), True: Receiver()}
    sent: dict[str, float] = {}
    seq = 0
    for r in range(rounds):
        for escalate in (False, True):
            # A fresh collector (session, state) each round: a stopped one's persistent
            # session would queue the other's probes and deliver them late.
            name = f"step0-{r}" if escalate else f"baseline-{r}"
            sections: dict[str, Any] = {"webhook": [hook("events", events[escalate],
                                                         ["fire_alarm"]),
                                                    hook("duty", duty[escalate], [])]}
            if escalate:
                sections["escalation"] = [{"name": "fire", "events": ["fire_alarm"],
                                           "step": [{"after_s": 0, "webhooks": ["duty"]}]}]
            proc = start(tmp, broker, name, **sections)
            pub = publisher(broker, f"probe-{name}")
            want = events[escalate].count() + probes // rounds
            try:
                for _ in range(probes // rounds):
                    seq += 1
                    src = Source(f"panel/1-1/42-0x{seq:08x}", Bus.GB26875, description="p")
                    e = Event(source=src, type=EventType.FIRE_ALARM, seq=seq,
                              receive_ms=time.time_ns() // 10**6)
                    payload = encode_batches(f"probe-{name}", "probe-site", e.receive_ms,
                                             [e])[0]
                    sent[src.id] = time.time()
                    pub.publish(f"firegate/v1/probe-{name}/records", payload, qos=1)
                    time.sleep(0.05)
                wait(lambda: events[escalate].count() >= want  # noqa: B023 - waited here
                     and (not escalate or duty[escalate].count() >= want))  # noqa: B023
            finally:
                pub.loop_stop()
                pub.disconnect()
                proc.stop()
    for escalate in (False, True):
        ev = [(t - sent[b["source"]["id"]]) * 1000 for t, b in events[escalate].bodies]
        print(f"{'with' if escalate else 'without'} escalation: publish -> event "
              f"notification received: {pct(ev)}", flush=True)
    st = [(t - sent[b["alarm"]["source"]]) * 1000 for t, b in duty[True].bodies]
    print(f"with escalation: publish -> step-0 notification received: {pct(st)}", flush=True)
    for r in (*events.values(), *duty.values()):
        r.close()


def mass(tmp: Path, broker: Mosquitto, n: int, after_s: float = 5.0) -> None:
    station = Receiver()
    proc = start(tmp, broker, "mass", webhook=[hook("station", station, [])],
                 escalation=[{"name": "all", "events": ["fire_alarm"],
                              "step": [{"after_s": after_s, "webhooks": ["station"]}]}])
    pub = publisher(broker, "mass-gw")
    try:
        now = time.time_ns() // 10**6
        records = [Event(source=Source(f"panel/1-1/42-0x{i:08x}", Bus.GB26875), seq=i + 1,
                         type=EventType.FIRE_ALARM, receive_ms=now) for i in range(n)]
        for payload in encode_batches("mass-gw", "mass-site", now, records):
            pub.publish("firegate/v1/mass-gw/records", payload, qos=1).wait_for_publish(30)
        ok = wait(lambda: station.count() >= n, timeout=120)
    finally:
        pub.loop_stop()
        pub.disconnect()
        proc.stop()
    dues = [b["alarm"]["raised_ms"] + after_s * 1000 for _, b in station.bodies]
    queued = [b["time_ms"] - d for (_, b), d in zip(station.bodies, dues, strict=True)]
    got = [t * 1000 - d for (t, _), d in zip(station.bodies, dues, strict=True)]
    raised = {b["alarm"]["raised_ms"] for _, b in station.bodies}
    print(f"{n} escalations due in the same second ({len(raised)} distinct raise ms, spread "
          f"{max(raised) - min(raised)} ms): {station.count()}/{n} received"
          f"{'' if ok else ' (gave up)'}"
          f"; due -> queued: max {max(queued):.0f} ms, median {statistics.median(queued):.0f} ms"
          f"; due -> POST received: max {max(got):.0f} ms, median {statistics.median(got):.0f} "
          "ms", flush=True)
    station.close()


def throughput(tmp: Path, n_open: int) -> None:
    book = AlarmBook(tmp / "apply" / "alarms.sqlite")
    srcs = [f"panel/1-1/42-0x{i:08x}" for i in range(n_open)]

    def raise_(i: int, seq: int) -> Signal:
        return Signal("raise", "gw-1", "site-1", srcs[i], "fire_alarm", "fire", "probe",
                      stamp=(1, seq))

    t0 = time.perf_counter()
    for k in range(0, n_open, 500):
        book.apply([raise_(i, 1) for i in range(k, min(k + 500, n_open))])
    opened = time.perf_counter() - t0
    print(f"opened {len(book.open_alarms())} alarms in {opened:.2f} s "
          f"({n_open / opened:,.0f}/s in groups of 500)", flush=True)
    for group in (1, 100):
        seq = 1 + group * 10
        signals = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 5.0:
            seq += 1
            batch = [raise_((seq * 7919 + j) % n_open, seq) for j in range(group)]
            book.apply(batch)
            signals += group
        dt = time.perf_counter() - t0
        print(f"apply with {n_open:,} open alarms, {group} signal(s) per apply: "
              f"{signals / dt:,.0f} signals/s ({signals / group / dt:,.0f} applies/s, "
              f"{dt / (signals / group) * 1000:.2f} ms each)", flush=True)
    book.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probes", type=int, default=400)
    ap.add_argument("--mass", type=int, default=1000)
    ap.add_argument("--open", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-alarms-") as d:
        tmp = Path(d)
        throughput(tmp, args.open)
        with Mosquitto(tmp / "broker") as broker:
            latency(tmp, broker, args.probes)
            mass(tmp, broker, args.mass)


if __name__ == "__main__":
    main()
