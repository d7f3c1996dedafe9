"""Throughput of the gateway fleet simulator into a local Mosquitto, from one process.

Starts its own Mosquitto (``tests.infra.mosquitto``) on a free loopback port, then runs the
fleet for a bounded time per row, at offered rates around and above what one core can build
and send (the first rows show the simulator's ceiling, the last a realistic load).
"produced" is records built per second of production (equal to the offered rate while the
simulator keeps up); "acknowledged" is records whose PUBACK arrived per second of the whole
run, the drain after production included (a batch interval at least: the last records go out
with the next batch). Every row must also
account for every record (``report.ok``), or the script says so. No subscriber: the broker's
fan-out is not measured.

    python bench/bench_fleet.py [--duration 10] [--gc-default]   # prints Markdown rows
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulators.fleet import FleetConfig, FleetReport, run_fleet
from simulators.fleet.runner import raise_nofile
from tests.infra.mosquitto import Mosquitto

# (gateways, records/s per gateway, max records per message, batch interval s)
ROWS = (
    (100, 1500.0, 1000, 1.0),
    (100, 1100.0, 1000, 1.0),
    (1000, 150.0, 1000, 1.0),
    (1000, 110.0, 1000, 1.0),
    (5000, 22.0, 1000, 1.0),
    (1000, 20.0, 1000, 1.0),  # a realistic load: 20k records/s, small batches
)


async def one(port: int, gateways: int, rate: float, max_batch: int, interval: float,
              duration: float) -> FleetReport:
    config = FleetConfig(broker=f"mqtt://127.0.0.1:{port}", gateways=gateways, rate=rate,
                         duration=duration, max_batch=max_batch, batch_interval=interval,
                         alarm_rate=0.001, seed=1, drain_timeout=60,
                         delete_on="puback")  # no collector here to confirm
    return await run_fleet(config)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="production seconds per row")
    ap.add_argument("--gc-default", action="store_true",
                    help="keep Python's default GC thresholds (the CLI raises them)")
    ap.add_argument("--rows", type=int, nargs="*",
                    help="indexes into ROWS to run, from 0 (default: all)")
    args = ap.parse_args()
    raise_nofile(max(r[0] for r in ROWS))  # before the broker starts: it inherits the limit
    if not args.gc_default:
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
    print("| gateways | offered records/s | produced records/s | acknowledged records/s | "
          "messages/s | records/message | records per gateway | production + drain s | "
          "every record acknowledged |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        for k, (gateways, rate, max_batch, interval) in enumerate(ROWS):
            if args.rows and k not in args.rows:
                continue
            report = asyncio.run(one(broker.port, gateways, rate, max_batch, interval,
                                        args.duration))
            t = report.totals()
            produced_rate = t["produced"] / max(report.production_s, 1e-9)
            drain = report.elapsed_s - report.production_s
            ok = "yes" if report.ok else "NO: " + str(dict(report.all_errors()))
            print(f"| {gateways:,} | {gateways * rate:,.0f} | {produced_rate:,.0f} | "
                  f"{t['records_per_s']:,.0f} | {t['messages_per_s']:,.0f} | "
                  f"{t['delivered'] / max(t['messages'], 1):,.0f} | "
                  f"{t['delivered'] / gateways:,.0f} | {report.production_s:.1f} + {drain:.1f} | "
                  f"{ok} |", flush=True)

if __name__ == "__main__":
    main()
