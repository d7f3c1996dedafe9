"""Throughput and line timing of the fire panel simulator (``firegate sim panel``).

Simulator and centre (the codec's StreamDecoder + Session, as in tests/sim_panel) run in one
process on one event loop, so the figures are a floor for what a separate agent process sees.
Uploads go one at a time (each waits for its confirm), like a real UITD, so the upload rate is
round-trip bound; reads are sent one at a time as well.

    .venv/bin/python bench/bench_panel_sim.py
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.gb26875 import Reserved
from simulators.panel import (
    Panel,
    PtyTransport,
    ScaledClock,
    Status,
    TcpListenTransport,
    UitdEngine,
)
from simulators.panel.scenario import parse_scenario
from tests.sim_panel.helpers import Centre, pty_centre, tcp_centre


@contextlib.asynccontextmanager
async def link(kind: str, pace: int | None) -> AsyncIterator[tuple[Panel, Centre]]:
    engine = UitdEngine(parse_scenario({}))
    transport = PtyTransport() if kind == "pty" else TcpListenTransport("127.0.0.1", 0)
    async with Panel(engine, transport, ScaledClock(1), pace=pace) as panel:
        opened = pty_centre(panel.address) if kind == "pty" else tcp_centre(panel.address)
        async with opened as centre:
            await panel.wait_until(lambda: engine.connected)
            yield panel, centre


async def uploads(kind: str, n: int, pace: int | None = None) -> float:
    async with link(kind, pace) as (panel, _):
        start = time.perf_counter()
        for k in range(n):
            panel.trigger("analog", component="pressure-roof", value=float(k % 3000))
        ledger = panel.engine.ledger
        await panel.wait_until(lambda: len(ledger.with_status(Status.CONFIRMED)) == n, 600)
        return n / (time.perf_counter() - start)


async def reads(kind: str, n: int) -> float:
    async with link(kind, None) as (_, centre):
        start = time.perf_counter()
        for _ in range(n):
            await centre.read(81, Reserved())
        return n / (time.perf_counter() - start)


async def frame_time(pace: int) -> tuple[float, float]:
    """Trigger to complete arrival of a 78-byte component-state upload, and its wire time."""
    async with link("pty", pace) as (panel, centre):
        times = []
        for k in range(10):
            start = time.monotonic()
            panel.trigger("fault" if k % 2 == 0 else "restore", component="module-pump-room")
            frame = await centre.upload(k + 1)
            times.append(centre.frames[-1][0] - start)
            assert len(frame.encode()) == 78
            await panel.wait_until(lambda: not panel.engine.ledger.undelivered())
        return min(times), 78 * 10 / pace


async def main() -> None:
    t, wire = await frame_time(9600)
    print(f"78-byte upload at 9600 baud: {t * 1000:.1f} ms trigger -> arrival "
          f"(wire time {wire * 1000:.1f} ms)")
    for kind in ("tcp", "pty"):
        print(f"{kind} unpaced: {await uploads(kind, 2000):,.0f} confirmed uploads/s, "
              f"{await reads(kind, 2000):,.0f} reads/s (81 -> 21)")
    print(f"pty paced 9600: {await uploads('pty', 20, 9600):,.1f} confirmed uploads/s "
          "(48-byte analog frame + 30-byte confirm)")


if __name__ == "__main__":
    asyncio.run(main())
