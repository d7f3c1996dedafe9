"""The MQTT uplink: backlog drain rate and fire-alarm latency, real outbox -> local Mosquitto.

Starts its own Mosquitto (``tests.infra.mosquitto``) on a free loopback port. Everything runs
with the shipped settings (outbox: WAL, synchronous=FULL, group commit; uplink: MQTT 5,
QoS 1, 1,000 records per message, a window of 16 messages) unless an option says otherwise.

1. **Drain**: a backlog of ``--backlog`` records (85 % Modbus measurements, 15 % panel events,
   as in bench_outbox.py) is stored first, then the uplink starts; the figure is records
   acknowledged (PUBACK received and deleted from the outbox) per second from start to empty.
   Target: >= 20,000 records/s for 1,000,000 records.
   Meanwhile one fire alarm every 50 ms, append -> PUBACK, with the window full of backlog.
2. **Fire-alarm latency** from the ``outbox.append`` call to the PUBACK of the message carrying
   the alarm, one alarm every 50 ms while measurements flow at ``--rate`` records/s (appended
   10 at a time, as a Modbus poller would), p50 / p99 / max.

With ``--observe`` a subscriber in this process also counts every record the broker delivers
(it shares the GIL with the uplink, so the drain figure drops; without it the broker's
fan-out is not measured). Timings are printed, never asserted.

    python bench/bench_uplink.py [--backlog 1000000] [--latency-s 10] [--observe]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.bench_outbox import fire_alarm, make_records
from edge.config.uplink import UplinkConfig
from edge.outbox import Outbox, OutboxConfig
from edge.uplink import Forwarder, MqttUplink
from protocols.wire import Priority
from tests.infra.mosquitto import Mosquitto

GW = "gw-bench-01"


class Counter:
    """A subscriber counting delivered records (``"seq":`` occurrences) in its own thread."""

    def __init__(self, port: int) -> None:
        self.records = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-observer",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"firegate/v1/{GW}/records", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.records += msg.payload.count(b'"seq":')

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


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


async def drain(base: Path, config: UplinkConfig, n: int, port: int, observe: bool) -> None:
    async with Outbox(OutboxConfig(base / "drain.db")) as outbox:
        rate = await fill(outbox, n)
        size = (await outbox.stats()).payload_bytes
        print(f"backlog: {n:,} records, {size / 2**20:.0f} MiB of payload, stored at "
              f"{rate:,.0f} records/s")
        counter = Counter(port) if observe else None
        try:
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
            print(f"drain: {n:,} records in {dt:.1f} s = {n / dt:,.0f} records/s, "
                  f"{size / dt / 2**20:.1f} MiB/s, {fw.acked_batches:,} messages "
                  f"({n / max(1, fw.acked_batches):.0f} records each)")
            if len(lat) > 1:
                print(f"fire alarm append -> PUBACK during the drain: {_pcts(lat)} "
                      f"({len(lat)} alarms)")
            if counter is not None:
                deadline = time.monotonic() + 30
                while counter.records < n and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                print(f"observer: {counter.records:,} records delivered")
        finally:
            if counter is not None:
                counter.close()


async def latency(base: Path, config: UplinkConfig, seconds: float, rate: float) -> None:
    flow = make_records(50_000, random.Random(7))
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
                i += 1
            stop = True
            await flood
        print(f"fire alarm append -> PUBACK with {rate:,.0f} measurements/s flowing: "
              f"{_pcts(lat)} ({len(lat)} alarms; of which append -> durable: {_pcts(durable)})")


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
    ap.add_argument("--observe", action="store_true", help="count deliveries at a subscriber")
    ap.add_argument("--dir", type=Path, help="where the databases go (default: a temp dir)")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, max_inflight {args.max_inflight}, "
          f"batch_max_records {args.batch}")
    with tempfile.TemporaryDirectory(prefix="bench-uplink-", dir=args.dir) as tmp, \
            Mosquitto(Path(tmp) / "broker") as broker:
        base = Path(tmp)
        config = UplinkConfig("127.0.0.1", broker.port, max_inflight=args.max_inflight,
                              batch_max_records=args.batch)
        if args.backlog:
            await drain(base, config, args.backlog, broker.port, args.observe)
        if args.latency_s:
            await latency(base, config, args.latency_s, args.rate)


if __name__ == "__main__":
    asyncio.run(main())
