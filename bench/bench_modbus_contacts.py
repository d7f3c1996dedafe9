"""Contacts on the Modbus driver: read rate of a 16-channel DI module, requests per poll with
and without the planner's gap rule, and how long a valve change takes to be reported.

A real pymodbus TCP server on loopback (``tests/edge/modbus_bits_rig.py``, in this process)
and the real driver with a timestamping ``emit``. Rows:

* polls/s of one di-16 with all 16 channels assigned, polled as fast as it answers
  (``interval_s`` 0.001, debounce 0): the driver's ceiling for contacts on this machine;
* the same with 8 channels (1, 3, ... 15) on a map that may not bridge gaps (``bit_gap`` 0)
  against the module's own (``bit_gap`` 15): requests per poll;
* change-to-record latency of a valve switch (debounce 500 ms) for two poll intervals, the
  change made at a random moment: the documented window is ``debounce_ms`` to
  ``interval_s + debounce_ms``.

    python bench/bench_modbus_contacts.py [--seconds S] [--samples N]   # prints Markdown rows
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.config.modbus import ModbusBusConfig, ModbusDeviceConfig
from edge.drivers.base import DriverContext
from edge.drivers.modbus import ModbusDriver
from edge.drivers.modbus_adapter import quiet_pymodbus_logging
from protocols.registers import Channel, DeviceProfile, Meaning, get_profile
from protocols.wire import Event, EventType, Record
from tests.edge.modbus_bits_rig import ContactServer


class Stamping:
    """``emit`` that notes when each event arrived (monotonic) and counts records."""

    def __init__(self) -> None:
        self.records = 0
        self.events: list[tuple[float, Event]] = []

    async def __call__(self, records: Sequence[Record]) -> None:
        self.records += len(records)
        now = time.monotonic()
        self.events.extend((now, r) for r in records if isinstance(r, Event))


def _bus(address: str, profile: DeviceProfile, interval_s: float, debounce_ms: float
         ) -> ModbusBusConfig:
    host, _, port = address.rpartition(":")
    device = ModbusDeviceConfig(unit=1, name="DI", profile=profile, interval_s=interval_s,
                                debounce_ms=debounce_ms)
    return ModbusBusConfig("b", (device,), host=host, tcp_port=int(port), timeout_s=0.5,
                           gap_ms=0.0)


@contextlib.asynccontextmanager
async def _driving(cfg: ModbusBusConfig) -> AsyncIterator[tuple[ModbusDriver, Stamping]]:
    sink = Stamping()
    driver = ModbusDriver(cfg, DriverContext(gateway_id="bench", emit=sink))
    task = asyncio.create_task(driver.run())
    try:
        yield driver, sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def rate(profile: DeviceProfile, seconds: float) -> tuple[float, float]:
    """(polls/s, requests per poll) of one device polled flat out."""
    server = ContactServer((1,))
    async with server.serving(), _driving(_bus(server.address, profile, 0.001, 0.0)) as (
            driver, _sink):
        await asyncio.sleep(0.5)  # connect, first polls
        reads0, t0 = driver.client.stats.by_unit.get(1, 0), time.perf_counter()
        await asyncio.sleep(seconds)
        reads, elapsed = driver.client.stats.by_unit[1] - reads0, time.perf_counter() - t0
    per_poll = len(profile.bit_blocks()) + len(profile.read_blocks())
    return reads / per_poll / elapsed, per_poll


async def latency(interval_s: float, debounce_ms: float, samples: int) -> list[float]:
    """Seconds from a valve closing to its valve_off_normal, ``samples`` times."""
    profile = get_profile("di-8").with_channels({1: Channel(Meaning.VALVE, "riser")})
    server = ContactServer((1,))
    di = server.devices[1].inputs
    di[0] = True
    out: list[float] = []
    rng = random.Random(1)
    async with server.serving(), _driving(_bus(server.address, profile, interval_s,
                                                debounce_ms)) as (_driver, sink):
        await asyncio.sleep(interval_s + debounce_ms / 1000 + 0.5)  # the open state known
        for i in range(samples):
            await asyncio.sleep(rng.uniform(0, interval_s))  # a random phase against the polls
            di[0] = not di[0]
            changed = time.monotonic()
            want = not di[0]  # closed: raised
            while not any(e.type is EventType.VALVE_OFF_NORMAL and e.active is want
                          and t >= changed for t, e in sink.events):
                await asyncio.sleep(0.005)
            t = next(t for t, e in sink.events if e.type is EventType.VALVE_OFF_NORMAL
                     and e.active is want and t >= changed)
            out.append(t - changed)
            del i
    return out


async def main(seconds: float, samples: int) -> None:
    quiet_pymodbus_logging()
    all16 = get_profile("di-16").with_channels(
        {n: Channel(Meaning.SUPERVISORY) for n in range(1, 17)})
    odd = get_profile("di-16").with_channels(
        {n: Channel(Meaning.SUPERVISORY) for n in range(1, 17, 2)})
    no_gap = dataclasses.replace(odd, bit_gap=0)
    print("| case | polls/s | requests per poll |")
    print("|---|---|---|")
    for name, profile in (("di-16, 16 channels", all16), ("di-16, 8 odd channels (bit_gap 15)",
                                                         odd),
                          ("the same map with bit_gap 0", no_gap)):
        polls, per_poll = await rate(profile, seconds)
        print(f"| {name} | {polls:,.0f} | {per_poll:.0f} |")
    print()
    print("| interval_s | debounce_ms | samples | change to record: min / median / max |")
    print("|---|---|---|---|")
    for interval_s in (0.2, 1.0):
        got = await latency(interval_s, 500.0, samples)
        print(f"| {interval_s:g} | 500 | {len(got)} | {min(got) * 1000:.0f} / "
              f"{statistics.median(got) * 1000:.0f} / {max(got) * 1000:.0f} ms |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.samples))
