"""Read rate of the Modbus simulator as a pymodbus client sees it, one request at a time.

Each read fetches the electrical fire detector's 6 holding registers (one merged read), the way
one master per bus polls: no concurrent requests. Client and server share one process and one
event loop, so the figures are an upper bound for loopback, not a property of any real line.
The paced RTU rows show what the relay's baud-rate pacing costs (8-byte request + 17-byte reply
= 25 characters per read, ~26 ms at 9600 baud before any turnaround).

    python bench/bench_modbus_sim.py [--reads N]    # prints Markdown rows for docs
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.framer import FramerType

from simulators.modbus.model import ManualClock
from simulators.modbus.scenario import Scenario, parse_device_option
from simulators.modbus.server import serve_rtu_pty, serve_tcp


async def rate(client: AsyncModbusTcpClient | AsyncModbusSerialClient, reads: int) -> float:
    await client.connect()
    try:
        start = time.perf_counter()
        for _ in range(reads):
            reply = await client.read_holding_registers(0, count=6, device_id=1)
            assert not reply.isError(), reply
        return reads / (time.perf_counter() - start)
    finally:
        client.close()


async def main(reads: int) -> None:
    bus = Scenario((parse_device_option("1:elec-fire"),)).build(ManualClock())
    rows: list[tuple[str, float]] = []
    async with serve_tcp(bus) as running:
        host, _, port = running.address.rpartition(":")
        rows.append(("TCP loopback", await rate(AsyncModbusTcpClient(host, port=int(port)),
                                                reads)))
    for label, baud, pace in (("RTU pty, unpaced", 9600, False),
                              ("RTU pty, paced 19200 baud", 19200, True),
                              ("RTU pty, paced 9600 baud", 9600, True)):
        n = reads if not pace else max(20, reads // 20)
        async with serve_rtu_pty(bus, baud, pace=pace) as running:
            client = AsyncModbusSerialClient(running.address, framer=FramerType.RTU,
                                             baudrate=baud)
            rows.append((label, await rate(client, n)))
    print("| transport | reads/s |")
    print("|---|---|")
    for label, value in rows:
        print(f"| {label} | {value:,.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    asyncio.run(main(parser.parse_args().reads))
