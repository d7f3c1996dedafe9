"""Read rate the Modbus driver sustains against ``firegate sim modbus``, N devices on one bus.

The simulator runs as its own process (as in the field, the devices are not in the agent's
event loop); the driver polls every device as often as it can (``interval_s = 0``), one request
at a time, and hands its records to a counting ``emit``. Devices cycle through the built-in
profiles, each of which the driver reads with one merged request per poll. Rows:

* TCP loopback and RTU over the simulator's pty without pacing, gap 0: the driver's own
  ceiling (decode, records, scheduling, pymodbus) on this machine;
* RTU pty, unpaced, with the 3.5-character gap that 9600 baud requires;
* RTU pty paced at 9600 baud with that gap: what a real RS-485 line at 9600 allows.

    python bench/bench_modbus_driver.py [--devices N] [--seconds S]   # prints Markdown rows
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.config.modbus import ModbusBusConfig, ModbusDeviceConfig, min_gap_ms
from edge.drivers.base import DriverContext
from edge.drivers.modbus import ModbusDriver
from edge.drivers.modbus_adapter import quiet_pymodbus_logging
from protocols.registers import PROFILES
from protocols.wire import Record
from tests.infra.simproc import simulator


class Counting:
    """``emit`` that only counts."""

    def __init__(self) -> None:
        self.records = 0

    async def __call__(self, records: Sequence[Record]) -> None:
        self.records += len(records)


async def measure(address: str, rtu: bool, devices: int, seconds: float, gap_ms: float
                  ) -> tuple[float, float, int]:
    """reads/s, records/s and the request count over ``seconds`` of polling."""
    keys = list(PROFILES)
    configs = tuple(ModbusDeviceConfig(unit=i, name=f"d{i}", profile=PROFILES[keys[(i - 1) %
                                                                                   len(keys)]],
                                       interval_s=0.0) for i in range(1, devices + 1))
    if rtu:
        cfg = ModbusBusConfig("bench", configs, port=address, timeout_s=0.5, gap_ms=gap_ms)
    else:
        host, _, port = address.rpartition(":")
        cfg = ModbusBusConfig("bench", configs, host=host, tcp_port=int(port), timeout_s=0.5,
                              gap_ms=gap_ms)
    sink = Counting()
    ctx = DriverContext(gateway_id="bench", emit=sink)
    driver = ModbusDriver(cfg, ctx)
    task = asyncio.create_task(driver.run())
    while ctx.counters.get("reads") == 0:  # connected and answering
        await asyncio.sleep(0.01)
    # (a previous run cut off mid-request may cost the first request a timeout on RTU)
    before = ctx.counters.snapshot()
    reads0, records0, start = ctx.counters.get("reads"), sink.records, time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - start
    reads, records = ctx.counters.get("reads") - reads0, sink.records - records0
    after = ctx.counters.snapshot()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    errors = {k: v - before.get(k, 0) for k, v in after.items()
              if k != "reads" and v != before.get(k, 0)}
    assert not errors, f"errors while measuring: {errors}"
    return reads / elapsed, records / elapsed, reads


async def main(devices: int, seconds: float) -> None:
    quiet_pymodbus_logging()
    ids = [arg for i in range(1, devices + 1)
           for arg in ("--device", f"{i}:{list(PROFILES)[(i - 1) % len(PROFILES)]}")]
    gap = min_gap_ms(9600)
    rows: list[tuple[str, tuple[float, float, int]]] = []
    async with simulator("modbus", "--tcp", "127.0.0.1:0", *ids) as (_p, address):
        rows.append(("TCP loopback, gap 0", await measure(address, False, devices, seconds,
                                                            0.0)))
    async with simulator("modbus", "--rtu", "--no-pace", *ids) as (_p, path):
        rows.append(("RTU pty unpaced, gap 0", await measure(path, True, devices, seconds,
                                                               0.0)))
        rows.append((f"RTU pty unpaced, gap {gap:.2f} ms",
                     await measure(path, True, devices, seconds, gap)))
    async with simulator("modbus", "--rtu", "--baud", "9600", *ids) as (_p, path):
        rows.append((f"RTU pty paced 9600 baud, gap {gap:.2f} ms",
                     await measure(path, True, devices, seconds, gap)))
    print(f"{devices} devices, {seconds:g} s per row")
    print("| transport | reads/s | records/s |")
    print("|---|---|---|")
    for label, (reads, records, _n) in rows:
        print(f"| {label} | {reads:,.0f} | {records:,.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.devices, args.seconds))
