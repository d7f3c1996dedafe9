"""The MQTT uplink: backlog drain rate and fire-alarm latency, real outbox -> local Mosquitto.

Starts its own Mosquitto (``tests.infra.mosquitto``) on a free loopback port and a collector
stand-in in another process (a paho subscriber to the records; with ``--delete-on stored``,
the default, it publishes each message's seq ranges to the gateway's ``stored`` topic, as the
collector does after each write, without decoding or storing anything else). A subscriber is
needed in both modes: without one Mosquitto answers PUBACK 0x10 (no matching subscribers),
which the uplink does not take for a delivery. Everything runs with the shipped settings
(outbox: WAL, synchronous=FULL, group commit; uplink: MQTT 5, QoS 1, 1,000 records per
message, a window of 16 messages) unless an option says otherwise.

1. **Drain**: a backlog of ``--backlog`` records (85 % Modbus measurements, 15 % panel events,
   as in bench_outbox.py) is stored first, then the uplink starts; the figure is records
   deleted from the outbox (confirmed stored, or PUBACKed with ``--delete-on puback``) per
   second from start to empty. Target: >= 20,000 records/s for 1,000,000 records.
   Meanwhile one fire alarm every 50 ms, append -> PUBACK, with the window full of backlog.
2. **Fire-alarm latency** from the ``outbox.append`` call to the PUBACK of the message carrying
   the alarm (and, with "stored", to its delete on the collector's confirmation), one alarm
   every 50 ms while measurements flow at ``--rate`` records/s (appended 10 at a time, as a
   Modbus poller would), p50 / p99 / max.

Timings are printed, never asserted.

    python bench/bench_uplink.py [--backlog 1000000] [--latency-s 10] [--delete-on puback]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.bench_outbox import fire_alarm, make_records
from edge.config.uplink import DeleteOn, UplinkConfig
from edge.outbox import Outbox, OutboxConfig
from edge.uplink import Forwarder, MqttUplink
from protocols.wire import Priority, Stored, encode_stored, seq_ranges, split_ranges
from tests.infra.mosquitto import Mosquitto

GW = "gw-bench-01"


_SEQ = re.compile(rb'"seq":(\d+)')
_EP = re.compile(rb'"ep":"([0-9a-f]{16})"')


def collector_child(port: int, confirm: bool) -> None:
    """The collector stand-in (its own process, as a real collector is): counts records and,
    with ``confirm``, publishes each message's seq ranges to ``firegate/v1/<gw>/stored``.
    Prints the records seen so far on every line of stdin."""
    seen = 0

    def on_message(c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        nonlocal seen
        payload = bytes(msg.payload)
        seqs = [int(x) for x in _SEQ.findall(payload)]
        seen += len(seqs)
        if not confirm:
            return
        ep = _EP.search(payload)
        gw = msg.topic.split("/")[2]
        for ranges in split_ranges(seq_ranges(seqs)):
            c.publish(f"firegate/v1/{gw}/stored", encode_stored(Stored(
                gw, int(ep[1], 16) if ep else 0, tuple(ranges), int(time.time() * 1000),
                "bench")), qos=1)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-collector",
                         protocol=paho.MQTTv5)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe("firegate/v1/+/records", qos=1)
    client.on_subscribe = lambda *_: print("ready", flush=True)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for _ in sys.stdin:
        print(seen, flush=True)
    client.loop_stop()


class Collector:
    """The stand-in's process, started and stopped by this bench (by its PID)."""

    def __init__(self, port: int, confirm: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--collector-child", str(port)]
            + (["--confirm"] if confirm else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the collector stand-in did not start")

    def records(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def uplink(outbox: Outbox, config: UplinkConfig
                 ) -> AsyncIterator[tuple[MqttUplink, Forwarder]]:
    up = MqttUplink(config, gateway_id=GW, version="bench", site="site-7")
    fw = Forwarder(outbox, config, gateway_id=GW, site="site-7")
    task = asyncio.create_task(up.run(fw.serve))
    try:
        yield up, fw
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def fill(outbox: Outbox, n: int) -> float:
    records = make_records(min(n, 200_000), random.Random(26875))
    t = time.perf_counter()
    futures = []
    for i in range(0, n, 5000):
        chunk = [records[(i + k) % len(records)] for k in range(min(5000, n - i))]
        futures.append(await outbox.submit(chunk))
    await asyncio.gather(*futures)
    return n / (time.perf_counter() - t)


async def drain(base: Path, config: UplinkConfig, n: int, collector: Collector) -> None:
    async with Outbox(OutboxConfig(base / "drain.db")) as outbox:
        rate = await fill(outbox, n)
        size = (await outbox.stats()).payload_bytes
        print(f"backlog: {n:,} records, {size / 2**20:.0f} MiB of payload, stored at "
              f"{rate:,.0f} records/s")
        seen = collector.records()
        t = time.perf_counter()
        async with uplink(outbox, config) as (_up, fw):
            confirmed: dict[int, float] = {}
            fw.on_confirmed = lambda seqs: confirmed.update(
                dict.fromkeys(seqs, time.perf_counter()))
            lat: list[float] = []
            i = 0
            # One fire alarm every 50 ms while the window is full of backlog messages.
            while outbox.depth(Priority.MEASUREMENT) > n // 10:
                await asyncio.sleep(0.05)
                t0 = time.perf_counter()
                [alarm] = await outbox.append([fire_alarm(i)])
                while alarm.seq not in confirmed:
                    await asyncio.sleep(0.0005)
                lat.append(confirmed[alarm.seq] - t0)
                i += 1
            while outbox.total_depth > 0:
                await asyncio.sleep(0.01)
            dt = time.perf_counter() - t
        n += i
        print(f"drain ({config.delete_on.value}): {n:,} records in {dt:.1f} s = "
              f"{n / dt:,.0f} records/s, {size / dt / 2**20:.1f} MiB/s, {fw.acked_batches:,} "
              f"messages ({n / max(1, fw.acked_batches):.0f} records each); "
              f"{fw.acked_records:,} PUBACKed, {fw.confirmed_records:,} confirmed")
        if len(lat) > 1:
            print(f"fire alarm append -> PUBACK during the drain: {_pcts(lat)} "
                  f"({len(lat)} alarms)")
        print(f"collector: {collector.records() - seen:,} records delivered")


async def latency(base: Path, config: UplinkConfig, seconds: float, rate: float) -> None:
    flow = make_records(50_000, random.Random(7))
    stored = config.delete_on is DeleteOn.STORED
    async with Outbox(OutboxConfig(base / "latency.db")) as outbox:
        confirmed: dict[int, float] = {}
        async with uplink(outbox, config) as (_up, fw):
            fw.on_confirmed = lambda seqs: confirmed.update(
                dict.fromkeys(seqs, time.perf_counter()))
            while _up.session is None:
                await asyncio.sleep(0.01)
            stop = False
            sent = 0

            async def measurements() -> None:
                nonlocal sent
                start, i = time.perf_counter(), 0
                while not stop:
                    await outbox.append(flow[i % 49_990: i % 49_990 + 10])
                    i += 10
                    sent += 10
                    ahead = sent / rate - (time.perf_counter() - start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)

            flood = asyncio.create_task(measurements())
            await asyncio.sleep(1.0)
            lat: list[float] = []
            durable: list[float] = []
            deleted: list[float] = []
            t_end = time.perf_counter() + seconds
            i = 0
            while time.perf_counter() < t_end:
                await asyncio.sleep(0.05)
                t0 = time.perf_counter()
                [alarm] = await outbox.append([fire_alarm(i)])
                durable.append(time.perf_counter() - t0)
                while alarm.seq not in confirmed:
                    await asyncio.sleep(0.0005)
                lat.append(confirmed[alarm.seq] - t0)
                # Each alarm waits for the one before it: no fire alarm stored = this one gone.
                while stored and outbox.depth(Priority.FIRE):
                    await asyncio.sleep(0.0005)
                deleted.append(time.perf_counter() - t0)
                i += 1
            stop = True
            await flood
        print(f"fire alarm append -> PUBACK with {rate:,.0f} measurements/s flowing: "
              f"{_pcts(lat)} ({len(lat)} alarms; of which append -> durable: {_pcts(durable)})")
        if stored:
            print(f"fire alarm append -> deleted on the collector's confirmation: "
                  f"{_pcts(deleted)}")


def _pcts(seconds: list[float]) -> str:
    ms = sorted(x * 1000 for x in seconds)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return f"p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, max {ms[-1]:.1f} ms"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backlog", type=int, default=1_000_000)
    ap.add_argument("--latency-s", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1000.0, help="measurements/s in part 2")
    ap.add_argument("--max-inflight", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1000, help="batch_max_records")
    ap.add_argument("--delete-on", choices=[d.value for d in DeleteOn], default="stored")
    ap.add_argument("--dir", type=Path, help="where the databases go (default: a temp dir)")
    ap.add_argument("--collector-child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--confirm", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.collector_child:
        collector_child(args.collector_child, args.confirm)
        return
    delete_on = DeleteOn(args.delete_on)
    print(f"python {sys.version.split()[0]}, max_inflight {args.max_inflight}, "
          f"batch_max_records {args.batch}, delete_on {delete_on.value}")
    with tempfile.TemporaryDirectory(prefix="bench-uplink-", dir=args.dir) as tmp, \
            Mosquitto(Path(tmp) / "broker") as broker:
        base = Path(tmp)
        config = UplinkConfig("127.0.0.1", broker.port, max_inflight=args.max_inflight,
                              batch_max_records=args.batch, delete_on=delete_on)
        collector = Collector(broker.port, delete_on is DeleteOn.STORED)
        try:
            if args.backlog:
                await drain(base, config, args.backlog, collector)
            if args.latency_s:
                await latency(base, config, args.latency_s, args.rate)
        finally:
            collector.close()


if __name__ == "__main__":
    asyncio.run(main())
