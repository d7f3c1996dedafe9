"""Figures of the ESP32 firmware, measured on the MicroPython unix port (docs/firmware.md).

* heap: what the firmware uses in a 100 KB heap (``micropython -X heapsize=100K``) while it polls
  the Modbus simulator fast and publishes over TLS (start-up use after collection, the highest
  ``gc.mem_alloc()`` seen before a collection, the lowest free), and the smallest heap it still
  runs in without a MemoryError;
* publish rate: a ring filled while the broker was away, sent at QoS 1 (one batch in flight,
  each PUBACK awaited) over TLS and over plain TCP, records/s and batches/s as the collector
  receives them, and how long after the last batch the collector's ``stored`` confirmations
  had emptied the ring (the helper collector confirms each batch as it decodes it);
* ring capacity: records per KB of flash, from the files a ring of each size occupies.

The unix port is a 64-bit build: pointers and object headers are twice an ESP32's, so its heap
figures are an upper bound for the board. Rates are loopback rates (no Wi-Fi), an upper bound too.

    python bench/bench_firmware.py [--seconds 8] [--records 1600]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firegate.provision import load_site, provision
from tests.firmware.helpers import (
    COLLECTOR,
    COLLECTOR_ACL,
    Collector,
    Node,
    ProvisionedBroker,
    build,
    json_lines,
    ring_held,
    run_mpy,
)
from tests.infra.simproc import simulator

SITE = """
[site]
id = "bench"
[uplink]
url = "{url}"
{ca}
reconnect_min_s = 0.2
reconnect_max_s = 1
health_interval_s = 1
[firmware]
ring_kb = {ring_kb}
[[modbus]]
name = "rs485"
port = "{pty}"
timeout_s = 0.2
gap_ms = 5
[[modbus.device]]
unit = 1
profile = "pressure-a"
interval_s = {interval}
backoff_max_s = {backoff}
[[modbus.device]]
unit = 5
profile = "elec-fire"
interval_s = {interval}
backoff_max_s = {backoff}
[[modbus.device]]
unit = 3
profile = "pressure-b"
interval_s = {interval}
backoff_max_s = {backoff}
[[rule]]
name = "low"
match = "modbus/rs485/*/pressure"
low = 0.15
hysteresis = 0.02
"""


def make_node(work: Path, fw: Path, broker: ProvisionedBroker, pty: str, *, tls: bool,
              interval: float, ring_kb: int = 32) -> tuple[Node, str]:
    assert broker.ca is not None
    url = (f"mqtts://localhost:{broker.tls_port}" if tls else f"mqtt://127.0.0.1:{broker.port}")
    site = work / "site.toml"
    site.write_text(SITE.format(url=url, ca=f'ca_file = "{broker.ca.cert}"' if tls else "",
                                pty=pty, interval=interval, backoff=max(300, interval),
                                ring_kb=ring_kb))
    result = provision(load_site(site), "firmware", firmware_data_dir=".")
    node_dir = work / "node"
    shutil.rmtree(node_dir, ignore_errors=True)
    shutil.copytree(fw, node_dir)
    (node_dir / "config.json").write_bytes(result.files["config.json"][0])
    broker.passwd_lines.append(result.passwd_line)
    broker.acl = (broker.acl or COLLECTOR_ACL) + "\n".join(result.acl) + "\n"
    return Node(node_dir), result.credentials.gateway_id


def healthy(node: Node) -> bool:
    return "MemoryError" not in node.log() and "fatal" not in node.log()


async def heap_figures(work: Path, fw: Path, pty: str, seconds: float) -> None:
    broker = ProvisionedBroker(work / "broker", users=dict([COLLECTOR]), tls=True)
    node, gw = make_node(work, fw, broker, pty, tls=True, interval=0.1)
    broker.start()
    col = Collector(broker, gw)
    try:
        node.start()
        await asyncio.sleep(seconds)
        match = re.search(r"heap: (\d+) bytes used", node.log())
        assert match is not None, node.log()
        records = sum(len(b.records) for b in col.batches)
        peak = max(h["x_heap_peak"] for h in col.raw_health)
        low = min(h["x_heap_free"] for h in col.raw_health)
        print(f"heap at 100 KB: {match.group(1)} bytes used after start-up; highest "
              f"gc.mem_alloc() before a collection {peak}; lowest free at a health report "
              f"{low}; {records} records in {seconds:g} s over TLS; MemoryError: "
              f"{'no' if healthy(node) else 'YES'}")
    finally:
        node.kill()
        col.close()
        broker.stop()
    smallest = None
    for kb in (98, 96, 94, 92, 90, 80):
        node.lines.clear()
        shutil.rmtree(node.dir / "ring", ignore_errors=True)
        broker.start()
        col = Collector(broker, gw)
        try:
            node.start(heap=f"{kb}K")
            await asyncio.sleep(min(seconds, 6))
            ok = healthy(node) and node.proc is not None and node.proc.poll() is None and \
                sum(len(b.records) for b in col.batches) > 0
        finally:
            node.kill()
            col.close()
            broker.stop()
        print(f"  heap {kb} KB: {'runs' if ok else 'fails'}")
        if not ok:
            print("    " + "\n    ".join(node.lines[-6:]))
        if not ok:
            break
        smallest = kb
    print(f"smallest heap it ran in (of 98/96/94/92/90/80 KB, {min(seconds, 6):g} s each): "
          f"{smallest} KB")


async def publish_rate(work: Path, fw: Path, pty: str, records: int, tls: bool) -> None:
    broker = ProvisionedBroker(work / f"broker-{tls}", users=dict([COLLECTOR]), tls=True)
    node, gw = make_node(work, fw, broker, pty, tls=tls, interval=3600, ring_kb=64)
    # fill the ring as a node that could not reach its broker would have
    fill = ("import json, sys\nfrom fg.ring import Ring\nfrom fg.ringopen import open_ring\n"
            "r = open_ring(Ring('ring', {}), 64)\nn = int(sys.stdin.read())\n"
            "src = 'firmware\\tmodbus/rs485/5/temperature_%d'\n"
            "for i in range(0, n, 50):\n"
            "    r.append([(0, 3, 2, 0, src % (j % 4 + 1), 0, 1718000000000 + j, 20.0 + j % 50 "
            "/ 10, 0.0, 0) for j in range(i, min(n, i + 50))])\n"
            "print('N', json.dumps([r.depth, r.capacity]))\n")
    depth, capacity = json_lines(run_mpy(fill, node.dir, heap="4M", stdin=str(records)),
                                 "N")[0]
    broker.start()
    col = Collector(broker, gw)
    try:
        node.start()
        col.wait(lambda: len({r.seq for b in col.batches for r in b.records}) >= depth,
                 "the backlog", timeout=120)
        arrived = time.monotonic()
        col.wait(lambda: not ring_held(node.dir / "ring"), "the ring emptied", timeout=120)
        emptied = time.monotonic() - arrived
        times = [b.sent_ms for b in col.batches]
        first, last = min(times), max(times)
        batches = len(col.batches)
        secs = max((last - first) / 1000, 1e-3)
        print(f"publish rate {'TLS' if tls else 'plain TCP'}: {depth} records (ring of "
              f"{capacity}) in {batches} batches, {depth / secs:,.0f} records/s, "
              f"{batches / secs:,.0f} batches/s (QoS 1, one batch in flight); every record "
              f"confirmed and the ring empty {emptied * 1000:,.0f} ms after the last batch "
              f"arrived")
    finally:
        node.kill()
        col.close()
        broker.stop()


def ring_capacity(work: Path, fw: Path) -> None:
    for kb in (16, 32, 64, 128):
        d = work / f"ring{kb}"
        d.mkdir()
        (d / "fg").symlink_to(fw / "fg")
        code = ("import json\nfrom fg.ring import Ring\nfrom fg.ringopen import open_ring\n"
                f"r = open_ring(Ring('ring', {{}}), {kb})\n"
                "r.append([(0, 3, 0, 0, 'firmware\\tmodbus/rs485/1/pressure', 0, 1, 0.35, 0.0, "
                "0)])\nprint('C', json.dumps(r.capacity))\n")
        capacity = json_lines(run_mpy(code, d, heap="1M"), "C")[0]
        used = sum(p.stat().st_size for p in (d / "ring").iterdir())
        print(f"ring_kb {kb}: {capacity} records in {used:,} bytes of files = "
              f"{capacity / (used / 1024):.1f} records per KB of flash "
              f"(RAM for its index: ~{capacity * 5:,} bytes, the sent state included)")


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--records", type=int, default=1600)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fw = build(work / "fw")
        ring_capacity(work, fw)
        async with simulator("modbus", "--rtu", "--no-pace", "--noise", "0", "--device",
                             "1:pressure-a=0.35", "--device", "3:pressure-b=0.4", "--device",
                             "5:elec-fire") as (_p, pty):
            await heap_figures(work / "heap", fw, pty, args.seconds)
            for tls in (True, False):
                await publish_rate(work / f"rate-{tls}", fw, pty, args.records, tls)


if __name__ == "__main__":
    t0 = time.monotonic()
    asyncio.run(main())
    print(f"(bench took {time.monotonic() - t0:.0f} s)")
