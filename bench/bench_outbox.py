"""The edge outbox: ingest rate, backlog drain rate, fire-alarm latency under a flood, size.

Run: ``python bench/bench_outbox.py`` (or ``./dev bench``). Standalone on purpose - timings
are reported, never asserted in tests. Everything runs with the shipped settings
(WAL, synchronous=FULL, group commit) on a database in ``--dir`` (default: a temporary
directory, i.e. the same disk as /tmp). Targets: ingest >= 50,000 records/s, drain of a
1,000,000-record backlog >= 20,000 records/s (outbox side, no MQTT: next_batch, payload join,
then either ``ack`` - ``delete_on = "puback"`` - or ``mark_sent`` + ``confirm`` of the batch's
seq ranges - ``delete_on = "stored"``, the default; half the backlog each), fire alarm
durable within a few ms while measurements flood in.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.outbox import Outbox, OutboxConfig  # after the sys.path set-up, for a plain checkout
from protocols.wire import (
    Bus,
    Event,
    EventType,
    Measurement,
    Quantity,
    Record,
    Source,
    encode_batch_from_encoded,
    seq_ranges,
)

T0 = 1_718_000_000_000
PLACES = ["一层东走廊", "二层配电间", "三层东走廊", "地下一层车库", "消防泵房"]
DEVICES = ["感烟探测器", "感温探测器", "手动报警按钮", "消火栓按钮", "输入模块"]
FIRE_SOURCE = Source("panel/1-1/258-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")


def make_records(n: int, rng: random.Random) -> list[Record]:
    """85 % Modbus/BLE measurements, 15 % panel events (faults, starts; no fire alarms)."""
    out: list[Record] = []
    for i in range(n):
        if rng.random() < 0.15:
            ca = rng.randrange(1, 600)
            src = Source(
                f"panel/1-1/{ca}-0x{0x100 + ca:08x}",
                Bus.GB26875,
                system_type=1,
                system_address=1,
                component_type=21,
                component_address=0x100 + ca,
                description=rng.choice(PLACES) + rng.choice(DEVICES),
            )
            event = rng.choice([EventType.FAULT, EventType.STARTED, EventType.SUPERVISORY])
            out.append(Event(source=src, type=event, receive_ms=T0 + i, state=2))
        else:
            n_dev = rng.randrange(1, 32)
            src = Source(f"modbus/bus1/{n_dev}/pressure", Bus.MODBUS)
            value = round(rng.uniform(0.2, 0.5), 3)
            out.append(
                Measurement(
                    source=src,
                    quantity=Quantity.PRESSURE,
                    value=value,
                    unit="MPa",
                    receive_ms=T0 + i,
                )
            )
    return out


def fire_alarm(i: int) -> Event:
    return Event(source=FIRE_SOURCE, type=EventType.FIRE_ALARM, receive_ms=T0 + i)


async def ingest(
    ob: Outbox, records: list[Record], producers: int, per_append: int, *, pipelined: bool
) -> float:
    """Records/s with ``producers`` concurrent drivers handing over ``per_append`` records
    at a time. ``append``: each waits for durability before its next call (as a panel
    driver must). ``submit``: each queues and goes on (as a Modbus poller may), the
    futures are collected at the end."""
    chunks = [records[i : i + per_append] for i in range(0, len(records), per_append)]

    async def producer(k: int) -> None:
        if not pipelined:
            for chunk in chunks[k::producers]:
                await ob.append(chunk)
            return
        futures = [await ob.submit(chunk) for chunk in chunks[k::producers]]
        await asyncio.gather(*futures)

    t = time.perf_counter()
    await asyncio.gather(*(producer(k) for k in range(producers)))
    return len(records) / (time.perf_counter() - t)


async def one_at_a_time(ob: Outbox, seconds: float) -> float:
    """The anti-pattern for comparison: one record, one commit, one fsync."""
    rec = make_records(1, random.Random(1))[0]
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        await ob.append([rec])
        n += 1
    return n / (time.perf_counter() - t)


async def drain(ob: Outbox, limit: int, *, confirm: bool) -> tuple[int, float]:
    """Take ``limit`` records out as the uplink does: next_batch, join a payload, then
    ``ack`` (delete at the PUBACK) or ``mark_sent`` + ``confirm`` by the batch's seq ranges
    (what the collector's ``stored`` message carries; computing them is the collector's
    work, counted here too)."""
    n, t = 0, time.perf_counter()
    while n < limit and (batch := await ob.next_batch()):
        payload = encode_batch_from_encoded("gw-bench-01", "site-7", T0, [r.encoded for r in batch],
                                            epoch=ob.epoch)
        assert payload
        seqs = [r.seq for r in batch]
        if confirm:
            ob.mark_sent(seqs)
            await ob.confirm(ob.epoch, seq_ranges(seqs))
        else:
            await ob.ack(seqs)
        n += len(batch)
    return n, n / (time.perf_counter() - t)


async def fire_latency(
    ob: Outbox, seconds: float, flood_rate: float | None
) -> tuple[list[float], list[float], float]:
    """Append-to-durable latency of fire alarms (one every 20 ms) and of measurement
    batches while 8 producers flood 50-record batches: at ``flood_rate`` records/s with
    ``append`` (paced drivers), or with ``submit`` as fast as the CPU allows (None)."""
    stop = False
    flood_records = make_records(50_000, random.Random(7))
    meas_lat: list[float] = []
    count = 0

    def done(t: float, n: int) -> None:
        nonlocal count
        meas_lat.append(time.perf_counter() - t)
        count += n

    async def flood(k: int) -> None:
        i = k * 50
        pending: list[asyncio.Future[list[Record]]] = []
        start = time.perf_counter()
        sent = 0
        while not stop:
            chunk = flood_records[i % 49_950 : i % 49_950 + 50]
            i += 400
            t = time.perf_counter()
            if flood_rate is None:
                future = await ob.submit(chunk)
                n = len(chunk)
                future.add_done_callback(lambda _f, t=t, n=n: done(t, n))
                pending.append(future)
                if len(pending) > 100:
                    await asyncio.gather(*pending)
                    pending.clear()
                continue
            await ob.append(chunk)
            done(t, len(chunk))
            sent += len(chunk)
            ahead = sent / (flood_rate / 8) - (time.perf_counter() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await asyncio.gather(*pending)

    fire_lat: list[float] = []
    tasks = [asyncio.create_task(flood(k)) for k in range(8)]
    await asyncio.sleep(0.5)  # let the flood reach its steady state
    t0, c0 = time.perf_counter(), count
    i = 0
    while time.perf_counter() - t0 < seconds:
        await asyncio.sleep(0.02)
        t = time.perf_counter()
        await ob.append([fire_alarm(i)])
        fire_lat.append(time.perf_counter() - t)
        i += 1
    rate = (count - c0) / (time.perf_counter() - t0)
    stop = True
    await asyncio.gather(*tasks)
    return fire_lat, meas_lat, rate


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1] * 1000 if len(values) > 1 else 0


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="where the database goes (default: a temp dir)")
    ap.add_argument("--ingest", type=int, default=200_000, help="records for the ingest runs")
    ap.add_argument("--backlog", type=int, default=1_000_000, help="records to drain")
    ap.add_argument("--latency-s", type=float, default=10.0, help="fire-latency run length")
    ap.add_argument(
        "--window", type=float, default=None, help="commit_window_s (default: the config's)"
    )
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-outbox-", dir=args.dir))
    window = OutboxConfig(base / "x").commit_window_s if args.window is None else args.window
    print(f"python {sys.version.split()[0]}, database in {base}, commit window {window * 1000} ms")
    try:
        records = make_records(args.ingest, random.Random(26875))

        # max_age_s: the bench's receive times are fixed in 2024; store times are now.
        def cfg(name: str, **kw: object) -> OutboxConfig:
            if args.window is not None:
                kw.setdefault("commit_window_s", args.window)
            return OutboxConfig(base / name, **kw)  # type: ignore[arg-type]

        async with Outbox(OutboxConfig(base / "single.db", commit_window_s=0.0)) as ob:
            rate = await one_at_a_time(ob, 2.0)
        print(f"  one writer, one record per commit (window 0: the fsync rate) {rate:,.0f}/s")
        for pipelined, producers, per_append in [
            (False, 64, 1),
            (False, 8, 50),
            (False, 8, 500),
            (True, 8, 50),
            (True, 1, 10),
        ]:
            name = f"ingest-{pipelined}-{producers}x{per_append}.db"
            async with Outbox(cfg(name)) as ob:
                rate = await ingest(ob, records, producers, per_append, pipelined=pipelined)
            how = "submit" if pipelined else "append"
            print(
                f"  ingest, {how}, {producers:>2} producers x {per_append:>3} records"
                f"  {rate:>10,.0f} records/s"
            )

        for flood_rate in (10_000.0, None):
            async with Outbox(cfg(f"latency-{flood_rate}.db")) as ob:
                fire, meas, rate = await fire_latency(ob, args.latency_s, flood_rate)
            how = "paced append" if flood_rate else "submit, CPU-bound"
            print(
                f"  fire alarm append->durable, {how} flood of {rate:,.0f} records/s:"
                f" p50 {pct(fire, 50):.1f} ms, p99 {pct(fire, 99):.1f} ms,"
                f" max {max(fire) * 1000:.1f} ms ({len(fire)} alarms); measurement batches"
                f" p50 {pct(meas, 50):.1f} ms, p99 {pct(meas, 99):.1f} ms"
            )

        backlog = make_records(args.backlog, random.Random(3))
        async with Outbox(cfg("backlog.db", max_bytes=1 << 40)) as ob:
            rate = await ingest(ob, backlog, 8, 500, pipelined=True)
            s = await ob.stats()
        print(f"  backlog of {args.backlog:,}: ingested at {rate:,.0f} records/s")
        size = s.file_bytes
        per = args.backlog / 1_000_000
        print(
            f"  file size: {size / per / 2**20:,.0f} MiB per 1M records (db + WAL), "
            f"payload {s.payload_bytes / per / 2**20:,.0f} MiB per 1M "
            f"({s.payload_bytes / args.backlog:.0f} bytes/record, file/payload "
            f"{size / s.payload_bytes:.2f})"
        )
        t = time.perf_counter()
        async with Outbox(cfg("backlog.db", max_bytes=1 << 40)) as ob:
            opened = time.perf_counter() - t
            n_ack, rate_ack = await drain(ob, args.backlog // 2, confirm=False)
            n, rate = await drain(ob, args.backlog, confirm=True)
        print(f"  reopen with {args.backlog:,} stored: {opened * 1000:,.0f} ms")
        print(f"  drain {n_ack:,} (next_batch + payload + ack)  {rate_ack:>10,.0f} records/s")
        print(f"  drain {n:,} (next_batch + payload + mark_sent + confirm)  {rate:>10,.0f} "
              f"records/s")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
