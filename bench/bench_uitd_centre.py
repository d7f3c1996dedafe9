"""Memory of the GB/T 26875.3 centre per UITD connection (target: 10,000 links at <= 20 KB).

Two processes on loopback: the centre (collector/uitd/centre.py, with a stand-in writer
that takes every item at once, so only the centre's own memory is measured; the writer and
store are shared by all links and measured in bench_collector.py) and a client process that
opens N UITD connections, each sending one upload (type 2, a component state) and one UITD
status (type 21) and waiting for both confirms. The centre's RSS is read from /proc before the
links open and after they are all confirmed and idle; the difference over N is the cost of one
link, its UITD state (mapper, memory of packets taken, session) and the kernel's share that
shows in RSS.

For comparison, ``--mode streams`` runs the alternative design the issue asks to measure: an
``asyncio.start_server`` handler (a task and a StreamReader per connection) that only reads.

    python bench/bench_uitd_centre.py --links 10000
    python bench/bench_uitd_centre.py --links 10000 --mode streams
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import queue
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.ingest import Prepared
from collector.points import points_for_batch
from collector.uitd.centre import Centre
from collector.uitd.config import CentreConfig
from collector.uitd.pipeline import UitdInbound
from protocols.gb26875 import (
    ApplicationData,
    Command,
    ComponentAddress,
    ComponentState,
    ComponentStatus,
    Session,
    StreamDecoder,
    TimeLabel,
    UitdState,
    UitdStatus,
    address_from_int,
)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _writer(prepared: queue.Queue[Prepared]) -> None:
    while True:
        item = prepared.get()
        if isinstance(item.inbound, UitdInbound):
            item.inbound.on_stored()


def serve(mode: str, port_q: mp.Queue[int], stop: mp.Event) -> None:  # type: ignore[type-arg]
    resource.setrlimit(resource.RLIMIT_NOFILE, (20_000, 20_000))

    async def streams() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while await reader.read(4096):
                    pass
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        port_q.put(server.sockets[0].getsockname()[1])
        while not stop.is_set():
            await asyncio.sleep(0.2)

    if mode == "streams":
        asyncio.run(streams())
        return
    prepared: queue.Queue[Prepared] = queue.Queue(maxsize=256)
    threading.Thread(target=_writer, args=(prepared,), daemon=True).start()
    config = CentreConfig(listen="127.0.0.1:0", accept_unknown=True, max_connections=20_000,
                          silence_timeout_s=3600.0)
    centre = Centre(config, collector_id="bench", prepared=prepared, render=points_for_batch,
                    epoch=1)
    centre.start_thread()
    assert centre.port is not None
    port_q.put(centre.port)
    stop.wait()
    counters = dict(centre.counters)
    print(json.dumps({"centre_counters": {k: counters[k] for k in sorted(counters)
                                          if k in ("accepted", "confirmed", "store")}}),
          flush=True)


async def clients(port: int, n: int, mode: str) -> float:
    label = TimeLabel(0, 30, 10, 6, 12, 26)
    sem = asyncio.Semaphore(200)
    conns = []

    async def one(i: int) -> None:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            conns.append(writer)
            if mode == "streams":
                return
            session = Session(address_from_int(0x10000 + i), bytes(6))
            decoder = StreamDecoder()
            upload = ApplicationData(2, (ComponentStatus(
                1, 1, 21, ComponentAddress.from_int(i), ComponentState(1), "bench", label),))
            status = ApplicationData(21, (UitdStatus(UitdState(1), label),))
            for adu in (upload, status):
                writer.write(session.send(Command.SEND_DATA, adu, time.monotonic()))
                got = []
                while not got:
                    data = await reader.read(4096)
                    if not data:
                        raise RuntimeError("closed by the centre")
                    got = [f for f in decoder.feed(data) if not hasattr(f, "kind")]

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    took = time.perf_counter() - start
    return took


def run_clients(port: int, n: int, mode: str, ready: mp.Event, done: mp.Event,  # type: ignore[type-arg]
                out: mp.Queue[float]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (20_000, 20_000))

    async def main() -> None:
        took = await clients(port, n, mode)
        out.put(took)
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.2)

    asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--links", type=int, default=10_000)
    ap.add_argument("--mode", choices=("centre", "streams"), default="centre")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    port_q: mp.Queue[int] = ctx.Queue()
    stop = ctx.Event()
    server = ctx.Process(target=serve, args=(args.mode, port_q, stop))
    server.start()
    port = port_q.get(timeout=60)
    time.sleep(1.0)  # settle the server's own start-up allocations
    before = rss_kb(server.pid or 0)
    ready, done = ctx.Event(), ctx.Event()
    out: mp.Queue[float] = ctx.Queue()
    client = ctx.Process(target=run_clients, args=(port, args.links, args.mode, ready, done,
                                                   out))
    client.start()
    took = out.get(timeout=600)
    ready.wait(60)
    time.sleep(2.0)
    after = rss_kb(server.pid or 0)
    done.set()
    client.join(30)
    stop.set()
    server.join(30)
    per_link = (after - before) * 1024 / args.links
    print(json.dumps({
        "mode": args.mode, "links": args.links, "rss_before_kb": before, "rss_after_kb": after,
        "bytes_per_link": round(per_link), "connect_and_confirm_s": round(took, 2),
        "links_per_s": round(args.links / took), "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
