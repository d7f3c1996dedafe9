"""Forwarding upward: the durable queue and the link to a higher centre (collector/uitd/).

1. **Enqueue** on the writer thread: ``--records`` fire alarms, each on its own component,
   offered in groups of 1, 10 and 100 events (one SQLite transaction, ``synchronous=FULL``,
   per group, as the writer does once per write group); rows/s and ms per group.
2. **Recovery after an outage**: a backlog of ``--backlog`` uploads (the default
   ``queue_max``) queued while the centre is down; then the centre starts and the figure is
   the time from its start to an empty queue (every upload confirmed), and uploads/s, for a
   window of 8 uploads in flight (the default) and of 1 (one at a time, as the panel
   simulator's UITD does).

3. **Fire alarms first**: while a backlog of five times ``--backlog`` faults drains, 20 fire
   alarms are offered 50 ms apart; offer -> confirmed by the centre, p50 and max.

The centre is a separate process (this file with ``--centre PORT``): the protocols/gb26875
codec on a loopback TCP socket confirming every upload, so the two sides do not share a GIL.
Timings are printed, never asserted.

    python bench/bench_upstream.py [--records 3000] [--backlog 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.uitd.config import UpstreamConfig
from collector.uitd.upstream import Forwarding
from collector.uitd.upstream_queue import Offer, UpstreamQueue
from protocols.gb26875 import Command, DecodeError, Session, StreamDecoder
from protocols.wire import Bus, Event, EventType, Source
from tests.infra.ports import free_port, wait_listening

T0 = 1_765_000_000_000


def offers(first: int, n: int) -> list[Offer]:
    out = []
    for i in range(first, first + n):
        src = Source(f"panel/1-1/42-0x{i:08x}", Bus.GB26875, system_type=1, system_address=1,
                     component_type=42, component_address=i, description=f"{i}号感烟")
        out.append(Offer("gw-1", 1, "site-1", Event(source=src, type=EventType.FIRE_ALARM,
                                                    receive_ms=T0, seq=i)))
    return out


def config(port: int, queue_max: int) -> UpstreamConfig:
    return UpstreamConfig(name="bench", host="127.0.0.1", port=port, uitd_address=1,
                          queue_max=queue_max, reconnect_min_s=0.05, reconnect_max_s=0.1)


def bench_enqueue(records: int) -> None:
    print(f"enqueue, {records} fire alarms (WAL, synchronous=FULL, one transaction a group)")
    for group in (1, 10, 100):
        with tempfile.TemporaryDirectory() as tmp:
            q = UpstreamQueue(Path(tmp) / "q.sqlite", [config(9, records * 2)], tz=UTC)
            items = offers(1, records)
            start = time.perf_counter()
            for k in range(0, records, group):
                q.enqueue(items[k:k + group])
            took = time.perf_counter() - start
            q.close()
        groups = -(-records // group)
        print(f"  groups of {group:>3}: {records / took:>9,.0f} rows/s, "
              f"{took / groups * 1000:6.2f} ms per group")


def bench_recovery(backlog: int, window: int) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        fwd = Forwarding(Path(tmp), [config(port, backlog)], tz=UTC, window=window)
        for k in range(0, backlog, 500):
            fwd.queue.enqueue(offers(1 + k, min(500, backlog - k)))
        fwd.start()  # the centre is down: nothing goes
        centre = subprocess.Popen([sys.executable, __file__, "--centre", str(port)])
        try:
            wait_listening(port)
            start = time.perf_counter()
            while fwd.queue.pending("bench"):
                time.sleep(0.01)
            took = time.perf_counter() - start
            stats = fwd.status(T0)[0]
        finally:
            fwd.close()
            centre.terminate()  # by PID: the process this bench started
            centre.wait(10)
    print(f"  window {window}: {backlog} uploads confirmed {took:6.2f} s after the centre "
          f"came back, {backlog / took:,.0f} uploads/s (sent {stats['sent']}, "
          f"resent {stats['resent']})")


def bench_fire_latency(backlog: int, alarms: int = 20) -> None:
    """Fire alarms offered while a backlog of faults drains: offer -> confirmed."""
    port = free_port()
    centre_proc = subprocess.Popen([sys.executable, __file__, "--centre", str(port)])
    wait_listening(port)
    with tempfile.TemporaryDirectory() as tmp:
        fwd = Forwarding(Path(tmp), [config(port, backlog + alarms)], tz=UTC)
        faults = offers(1, backlog)
        faults = [Offer(o.gateway, o.epoch, o.site, Event(
            source=o.event.source, type=EventType.FAULT, receive_ms=T0, seq=o.event.seq))
            for o in faults]
        for k in range(0, backlog, 500):
            fwd.queue.enqueue(faults[k:k + 500])
        watch = sqlite3.connect(Path(tmp) / "upstream.sqlite")
        fwd.start()
        took = []
        try:
            while fwd.queue.pending("bench") > backlog * 0.9:
                time.sleep(0.001)  # draining has begun
            for i, alarm in enumerate(offers(backlog + 1, alarms)):
                start = time.perf_counter()
                fwd.offer([alarm])
                key = f"gw-1:1:{backlog + 1 + i}"
                while watch.execute("SELECT state FROM queue WHERE key = ?",
                                    (key,)).fetchone()[0] != "done":
                    time.sleep(0.0005)
                took.append(time.perf_counter() - start)
                time.sleep(0.05)
            left = fwd.queue.pending("bench")
        finally:
            watch.close()
            fwd.close()
            centre_proc.terminate()  # by PID: the process this bench started
            centre_proc.wait(10)
    took.sort()
    print(f"  {alarms} fire alarms offered while {backlog} faults drain ({left} still queued "
          f"after the last): offer -> confirmed p50 {statistics.median(took) * 1000:.1f} ms, "
          f"max {took[-1] * 1000:.1f} ms")


def centre(port: int) -> None:
    """Confirm every upload on ``port`` (one connection at a time) until terminated."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        session, decoder = Session(bytes(6), bytes(6)), StreamDecoder()
        with conn, contextlib.suppress(ConnectionError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                out = [session.confirm(f) for f in decoder.feed(data)
                       if not isinstance(f, DecodeError) and f.command == Command.SEND_DATA]
                if out:
                    conn.sendall(b"".join(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--backlog", type=int, default=10_000)
    ap.add_argument("--centre", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.centre:
        centre(args.centre)
        return
    bench_enqueue(args.records)
    print(f"recovery after an outage, backlog {args.backlog}")
    for window in (8, 1):
        bench_recovery(args.backlog, window)
    print("fire alarms ahead of a backlog (window 8)")
    bench_fire_latency(args.backlog * 5)


if __name__ == "__main__":
    main()
