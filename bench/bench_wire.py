"""Throughput of the wire codec: records/s for encode and decode, peak memory of a decode.

Run: ``python bench/bench_wire.py`` (or ``./dev bench``). Standalone on purpose - timings are
reported, never asserted in tests. The target is the collector's: decode_batch at >= 300,000
records/s on one core for ~500-record batches, so one process ingests 100,000 records/s with
room left for the InfluxDB write.

The records imitate a building: mostly Modbus and BLE measurements, about 15 % panel events
with the panel's own Chinese component descriptions and GB/T 26875.3 addressing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocols.wire import (  # after the sys.path set-up, for a plain checkout
    MAX_PAYLOAD_BYTES,
    MAX_RECORDS_PER_BATCH,
    Bus,
    Event,
    EventType,
    Measurement,
    Quantity,
    Record,
    Source,
    decode_batch,
    encode_batches,
)
from protocols.wire.codec import _SOURCES  # to measure without the memo

T0 = 1_718_000_000_000
PLACES = ["一层东走廊", "二层配电间", "三层东走廊", "地下一层车库", "消防泵房", "七层电梯前室"]
DEVICES = ["感烟探测器", "感温探测器", "手动报警按钮", "消火栓按钮", "输入模块", "声光警报器"]
MEASURES = [
    (Bus.MODBUS, "modbus/bus1/{n}/pressure", Quantity.PRESSURE, "MPa", 0.25, 0.45),
    (Bus.MODBUS, "modbus/bus1/{n}/level", Quantity.LEVEL, "m", 1.2, 3.8),
    (Bus.MODBUS, "modbus/bus2/{n}/residual_current", Quantity.RESIDUAL_CURRENT, "mA", 0, 300),
    (Bus.BLE, "ble/A4:C1:38:00:{n:02X}:01", Quantity.TEMPERATURE, "°C", 18, 32),
    (Bus.BLE, "ble/A4:C1:38:00:{n:02X}:01", Quantity.BATTERY, "%", 20, 100),
    (Bus.BLE, "ble/A4:C1:38:00:{n:02X}:01", Quantity.RSSI, "dBm", -95, -40),
]
EVENTS = [EventType.FIRE_ALARM, EventType.FAULT, EventType.SUPERVISORY, EventType.STARTED]


def make_records(n: int, rng: random.Random, first_seq: int = 1) -> list[Record]:
    out: list[Record] = []
    for i in range(n):
        t = T0 + i * 37
        if rng.random() < 0.15:
            sa, ca = rng.randrange(1, 4), rng.randrange(1, 600)
            src = Source(
                f"panel/1-{sa}/{ca}-0x{0x100 + ca:08x}",
                Bus.GB26875,
                system_type=1,
                system_address=sa,
                component_type=rng.choice([21, 23, 31, 40]),
                component_address=0x100 + ca,
                description=rng.choice(PLACES) + rng.choice(DEVICES),
            )
            rec: Record = Event(
                seq=first_seq + i,
                receive_ms=t,
                source=src,
                type=rng.choice(EVENTS),
                active=rng.random() < 0.7,
                source_ms=t - rng.randrange(0, 3000),
                state=rng.choice([0x0002, 0x0004, 0x0001]),
            )
        else:
            bus, pattern, q, unit, lo, hi = rng.choice(MEASURES)
            src = Source(pattern.format(n=rng.randrange(1, 32)), bus)
            rec = Measurement(
                seq=first_seq + i,
                receive_ms=t,
                source=src,
                quantity=q,
                value=round(rng.uniform(lo, hi), 3),
                unit=unit,
            )
        out.append(rec)
    return out


def best_rate(fn: Callable[[], object], n_records: int, repeat: int) -> tuple[float, float]:
    """(best, median) records per second over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n_records / min(times), n_records / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=500, help="records per batch (default 500)")
    ap.add_argument("--batches", type=int, default=200, help="batches per run (default 200)")
    ap.add_argument("--repeat", type=int, default=7, help="runs; best and median shown")
    args = ap.parse_args()
    rng = random.Random(26875)

    total = args.batch * args.batches
    records = make_records(total, rng)
    chunks = [records[i : i + args.batch] for i in range(0, total, args.batch)]

    def encode_all() -> list[bytes]:
        return [p for c in chunks for p in encode_batches("gw-bench-01", "site-7", T0, c)]

    payloads = encode_all()
    assert len(payloads) == args.batches, "a bench batch was split; use a smaller --batch"
    size = statistics.mean(len(p) for p in payloads)

    def decode_all() -> None:
        for p in payloads:
            decode_batch(p)

    def decode_all_cold() -> None:
        # Every batch from a gateway the collector has not seen yet (or a cache too small
        # for the fleet): Source objects are validated and built once per batch.
        for p in payloads:
            _SOURCES.clear()
            decode_batch(p)

    enc_best, enc_med = best_rate(encode_all, total, args.repeat)
    dec_best, dec_med = best_rate(decode_all, total, args.repeat)
    cold_best, cold_med = best_rate(decode_all_cold, total, args.repeat)
    print(f"python {sys.version.split()[0]}, {args.batches} batches x {args.batch} records")
    print(f"  mean payload        {size:,.0f} bytes ({size / args.batch:.0f} bytes/record)")
    print(f"  encode_batches      {enc_best:>10,.0f} records/s best, {enc_med:,.0f} median")
    print(f"  decode_batch        {dec_best:>10,.0f} records/s best, {dec_med:,.0f} median")
    print(f"   (cold src cache)   {cold_best:>10,.0f} records/s best, {cold_med:,.0f} median")

    # One payload as large as the limits allow: 128 KiB or 5000 records, whichever first.
    big = make_records(MAX_RECORDS_PER_BATCH, random.Random(1))
    payload = encode_batches("gw-bench-01", "site-7", T0, big)[0]
    n = len(decode_batch(payload).records)
    tracemalloc.start()
    batch = decode_batch(payload)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del batch
    print(
        f"  max-size batch      {len(payload):,} bytes, {n} records: decode peak "
        f"{peak / 1024:,.0f} KiB traced ({peak / len(payload):.1f}x the payload)"
    )
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SystemExit("bug: payload over the limit")


if __name__ == "__main__":
    main()
