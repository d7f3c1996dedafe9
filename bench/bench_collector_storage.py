"""Throughput of the collector's storage side: mapping, line protocol, sinks and the ledger.

Run: ``python bench/bench_collector_storage.py`` (``--records``, ``--repeat``, ``--no-vm``).
Standalone on purpose: figures are printed, never asserted in tests. Measures, on one core:

* ``points_for_batch`` + ``to_line`` - the pure mapping, records/s;
* ``InfluxSink.write`` to a local VictoriaMetrics (apt ``victoria-metrics``, started on a free
  port and stopped by PID), synchronous writes of 5,000 lines, points/s including the mapping;
  the run is valid only if the server then holds exactly the points written;
* ``SqliteSink.write`` (WAL, ``synchronous=FULL``) in writes of 5,000 points;
* ``SeqLedger.fresh`` + ``commit`` per 500-record batch.

The records imitate a building (as bench_wire.py): mostly Modbus and BLE measurements, about
15 % panel events with Chinese component descriptions and GB/T 26875.3 addressing. Receive
times are recent, because VictoriaMetrics drops samples outside its retention.
"""

from __future__ import annotations

import argparse
import functools
import gc
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.ledger import SeqLedger  # after the sys.path set-up, for a plain checkout
from collector.lineproto import to_line
from collector.points import Point, points_for_batch
from collector.sinks import Sink, SinkConfig
from collector.sinks.sqlite import SqliteSink
from protocols.wire import (
    Batch,
    Bus,
    Event,
    EventType,
    Measurement,
    Quantity,
    Record,
    Source,
    decode_batch,
    encode_batch,
)

PLACES = ["一层东走廊", "二层配电间", "三层东走廊", "地下一层车库", "消防泵房", "七层电梯前室"]
DEVICES = ["感烟探测器", "感温探测器", "手动报警按钮", "消火栓按钮", "输入模块", "声光警报器"]
MEASURES = [
    (Bus.MODBUS, "modbus/bus1/{n}/pressure", Quantity.PRESSURE, "MPa", 0.25, 0.45),
    (Bus.MODBUS, "modbus/bus1/{n}/level", Quantity.LEVEL, "m", 1.2, 3.8),
    (Bus.MODBUS, "modbus/bus2/{n}/residual_current", Quantity.RESIDUAL_CURRENT, "mA", 0, 300),
    (Bus.BLE, "ble/A4:C1:38:00:{n:02X}:01", Quantity.TEMPERATURE, "°C", 18, 32),
    (Bus.BLE, "ble/A4:C1:38:00:{n:02X}:01", Quantity.BATTERY, "%", 20, 100),
]
EVENTS = [EventType.FIRE_ALARM, EventType.FAULT, EventType.SUPERVISORY, EventType.STARTED]
BATCH = 500
GATEWAYS = 20


def make_batches(n: int, t0_ms: int, rng: random.Random) -> list[Batch]:
    """``n`` records in batches of BATCH from GATEWAYS gateways, decoded as the collector
    sees them. Each record gets its own millisecond, so VictoriaMetrics (ms resolution,
    dedup on) keeps every one."""
    batches: list[Batch] = []
    per_gw = [0] * GATEWAYS
    for b in range(0, n, BATCH):
        g = (b // BATCH) % GATEWAYS
        records: list[Record] = []
        for i in range(b, min(n, b + BATCH)):
            per_gw[g] += 1
            t, seq = t0_ms + i, per_gw[g]
            if rng.random() < 0.15:
                sa, ca = rng.randrange(1, 4), rng.randrange(1, 600)
                src = Source(f"panel/1-{sa}/42-0x{ca:08X}", Bus.GB26875, system_type=1,
                             system_address=sa, component_type=42, component_address=ca,
                             description=rng.choice(PLACES) + rng.choice(DEVICES))
                records.append(Event(source=src, type=rng.choice(EVENTS), receive_ms=t, seq=seq,
                                     source_ms=t - 150, state=rng.randrange(0, 8)))
            else:
                bus, pattern, q, unit, lo, hi = rng.choice(MEASURES)
                src = Source(pattern.format(n=rng.randrange(1, 40)), bus)
                records.append(Measurement(source=src, quantity=q, unit=unit, receive_ms=t,
                                           seq=seq, value=round(rng.uniform(lo, hi), 3)))
        batch = Batch(f"gw-{g:04d}", "sh-pd-017", t0_ms, tuple(records))
        batches.append(decode_batch(encode_batch(batch)))
    return batches


def best_of(repeat: int, run: Callable[[], object]) -> tuple[float, float]:
    """(best, median) seconds of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def report(name: str, n: int, best: float, median: float, unit: str = "points/s") -> None:
    print(f"{name:<52} {n / best:>12,.0f} {unit}  (median {n / median:,.0f})")


def _map_each(batches: list[Batch]) -> None:
    for b in batches:
        points_for_batch(b)


def _map_and_line_each(batches: list[Batch]) -> None:
    for b in batches:
        for p in points_for_batch(b):
            to_line(p)


def _line_each(points: list[Point]) -> None:
    for p in points:
        to_line(p)


def bench_mapping(batches: list[Batch], n: int, repeat: int) -> list[Point]:
    """Streaming, as the pipeline does: each batch's points are dropped after use."""
    report("points_for_batch", n, *best_of(repeat, functools.partial(_map_each, batches)))
    points = [p for b in batches for p in points_for_batch(b)]
    gc.collect()
    gc.freeze()  # the input of the next steps: out of the collector's sight, like the records
    report("to_line", n, *best_of(repeat, functools.partial(_line_each, points)))
    report("points_for_batch + to_line", n, *best_of(
        repeat, functools.partial(_map_and_line_each, batches)))
    return points


def _chunks(points: list[Point], size: int) -> list[list[Point]]:
    return [points[i:i + size] for i in range(0, len(points), size)]


def _write_all(sink: Sink, chunks: list[list[Point]]) -> None:
    for chunk in chunks:
        sink.write(chunk)


def bench_victoria(points: list[Point], repeat: int) -> None:
    from collector.sinks.influx import InfluxSink
    from tests.infra.victoria import VictoriaMetrics

    with tempfile.TemporaryDirectory() as tmp, VictoriaMetrics(Path(tmp)) as vm:
        sink = InfluxSink(SinkConfig(influx_url=vm.url, bucket="bench"))
        try:
            for size in (5000, 20000):
                chunks = _chunks(points, size)  # a pipeline group of `size` points per write
                best, median = best_of(repeat, functools.partial(_write_all, sink, chunks))
                report(f"InfluxSink.write -> VictoriaMetrics ({size:,}/write)", len(points),
                       best, median)
        finally:
            sink.close()
        # Honest figure: every point is stored exactly once (rewrites overwrite, dedup on).
        stored = sum(len(s["values"]) for s in vm.export('{__name__="fg_event_seq"}')) + \
            sum(len(s["values"]) for s in vm.export('{__name__="fg_value_seq"}'))
        print(f"{'  stored in VictoriaMetrics afterwards':<52} {stored:>12,} points "
              f"({'exactly' if stored == len(points) else 'NOT'} the {len(points):,} written)")


def bench_sqlite(points: list[Point], repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sink = SqliteSink(Path(tmp) / "store.sqlite3")
        chunks = _chunks(points, 5000)
        try:
            report("SqliteSink.write (5,000/write, WAL, FULL)", len(points),
                   *best_of(repeat, lambda: _write_all(sink, chunks)))
            print(f"{'  rows afterwards':<52} {sink.count():>12,}")
        finally:
            sink.close()


def bench_ledger(batches: list[Batch], n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = SeqLedger(Path(tmp) / "ledger.sqlite")
        now = int(time.time() * 1000)
        start = time.perf_counter()
        for b in batches:
            seqs = [r.seq for r in b.records]
            fresh = ledger.fresh(b.gateway_id, seqs)
            ledger.commit(b.gateway_id, [s for s, f in zip(seqs, fresh, strict=True) if f], now)
        elapsed = time.perf_counter() - start
        report(f"SeqLedger.fresh + commit ({BATCH}/batch, FULL)", n, elapsed, elapsed,
               "records/s")
        start = time.perf_counter()
        for b in batches:  # everything again: all duplicates, no commit needed
            ledger.fresh(b.gateway_id, [r.seq for r in b.records])
        elapsed = time.perf_counter() - start
        report("SeqLedger.fresh of redelivered batches", n, elapsed, elapsed, "records/s")
        ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-vm", action="store_true", help="skip the VictoriaMetrics run")
    args = parser.parse_args()
    rng = random.Random(26875)
    t0 = int(time.time() * 1000) - 3_600_000 - args.records  # recent: inside VM retention
    batches = make_batches(args.records, t0, rng)
    # The inputs stay alive for the whole run; freeze them out of the GC's sight, as a
    # collector does with its start-up objects (docs/wire-protocol.md, implementation notes).
    # Without this, collections scanning 200,000 live records dominate the mapping figure.
    gc.collect()
    gc.freeze()
    print(f"{args.records:,} records in batches of {BATCH} from {GATEWAYS} gateways, "
          f"best of {args.repeat}")
    points = bench_mapping(batches, args.records, args.repeat)
    if not args.no_vm:
        bench_victoria(points, args.repeat)
    bench_sqlite(points, args.repeat)
    bench_ledger(batches, args.records)


if __name__ == "__main__":
    main()
