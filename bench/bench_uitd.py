"""The collector as a GB/T 26875.3 centre under a UITD fleet: connections, memory, latency.

Starts its own Mosquitto and a real collector (``python -m collector``, a subprocess, with
``[gb26875] listen`` on a free loopback port, ``accept_unknown = true`` and the embedded SQLite
store), then drives it with ``simulators.uitd`` from this process:

1. **idle**: the collector's RSS (``/proc/PID/status`` VmRSS) with the centre listening and no
   UITD connected;
2. **connected**: N UITDs dial in (ramped), each announces its state (type 21 + type 1) and
   then sends it every ``--state-interval`` s (staggered); once every upload is confirmed and
   the process has settled, RSS again: ``(RSS_N - RSS_idle) / N`` is the memory per connection;
3. **load**: analog uploads at ``--rate`` per second over the fleet on top of the periodic
   state, and one fire alarm burst (``--burst-fraction`` of the UITDs, 2 alarms each) in the
   middle of a ``--measure`` s window; the confirm latency (last transmission to confirm, as
   the UITD sees it, this process's loop lag included) over that window, and the CPU seconds
   each process used;
4. **check**: every upload confirmed, and every fire alarm of the fleet's ground truth in the
   store exactly once.

RLIMIT_NOFILE is raised to the hard limit in this process before the collector starts (the
child inherits it); both processes' limits are printed.

    python bench/bench_uitd.py [--uitds 10000] [--rate 2000] [--measure 30]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tomli_w

from simulators.uitd import Burst, UitdFleet, parse_spec, raise_nofile
from tests.collector.conftest import CollectorProcess, config_data, stored_points
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port, wait_listening

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/PID/stat`` fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def sched(pid: int) -> tuple[float, float]:
    """(CPU s, run-queue wait s) summed over a process's threads (``schedstat``): the wait is
    time the process was ready to run but another process had the core."""
    run = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            a, b, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        run, wait = run + int(a), wait + int(b)
    return run / 1e9, wait / 1e9


def scrape(port: int) -> dict[str, float]:
    """The collector's /metrics: write_seconds and fire_alarm_latency_seconds sums and
    counts, queue depth."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith("#") or "{" in line.split(" ")[0]:
            continue
        name, _, value = line.partition(" ")
        for key in ("write_seconds_sum", "write_seconds_count", "queue_depth",
                    "fire_alarm_latency_seconds_sum", "fire_alarm_latency_seconds_count"):
            if name.endswith(key):
                out[key] = float(value)
    return out


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def nofile(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return f"{soft}/{hard}"
    return "?"


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return (f"{model}, {os.cpu_count()} cores, {int(mem) // 1024:,} MB RAM, Linux "
            f"{platform.release()}, Python {platform.python_version()}")


async def settle(pid: int, seconds: float) -> int:
    """RSS after ``seconds`` of quiet (the largest of the last few samples)."""
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(rss_kb(pid))
        await asyncio.sleep(0.5)
    return max(samples[-3:])


def stored_fire_alarms(store: Path) -> Counter[tuple[str, str, int]]:
    out: Counter[tuple[str, str, int]] = Counter()
    for p in stored_points(store, "fg_event"):
        row = {**dict(p.tags), **dict(p.fields)}
        # detectors only: the system's word (type 1) and the UITD's (type 21) restate a
        # fire alarm as their own condition, sources gb26875/1-1/system and gb26875/uitd
        if (row["type"] == "fire_alarm" and row["active"] is True
                and "/42-0x" in str(row["source"])):
            out[(str(row["gateway"]), str(row["source"]), int(row["source_ms"]))] += 1
    return out


async def drive(args: argparse.Namespace, port: int, pid: int, store: Path | None,
                metrics_port: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"collector_nofile": nofile(pid), "bench_nofile": nofile(os.getpid())}
    await asyncio.sleep(2.0)
    out["idle_kb"] = await settle(pid, 3.0)
    spec = parse_spec({"centre": f"127.0.0.1:{port}", "uitds": args.uitds, "detectors": 8,
                       "state_interval": args.state_interval, "rate": 0,
                       "connect_rate": args.connect_rate, "confirm_timeout": 10.0,
                       "reconnect_min": 1.0, "reconnect_max": 10.0, "seed": 1})
    fleet = UitdFleet(spec)
    t = time.monotonic()
    await fleet.start()
    # 10,000 engines are millions of long-lived objects: out of the collector's way, as the
    # CLI does (a full collection of them would stall the loop for a second or more)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        if not await fleet.wait_connected(600):
            raise SystemExit(f"only {fleet.connected} of {args.uitds} UITDs connected: "
                             f"{dict(fleet.ledger.errors)}")
        out["connect_s"] = time.monotonic() - t
        await fleet.wait_until(lambda: fleet.pending == 0, 600)
        out["announced_s"] = time.monotonic() - t
        out["connected_kb"] = await settle(pid, args.settle)
        out["idle_latency"] = fleet.ledger.latency_summary()
        # load: periodic state + analog uploads at --rate, a burst in the middle
        fleet.ledger.reset_latencies()
        c0, confirmed0 = (cpu_s(pid), own_cpu_s()), fleet.ledger.counts["confirmed"]
        # (the scrape in a thread: a starved collector answers slowly, and this loop is the
        # fleet's, whose lag would count as confirm latency)
        s0, own0 = sched(pid), sched(os.getpid())
        m0 = await asyncio.to_thread(scrape, metrics_port) if metrics_port else {}
        spy = None
        if args.py_spy:  # a sampling profile of the collector over the load window
            spy = await asyncio.create_subprocess_exec(
                args.py_spy, "record", "--pid", str(pid), "--duration", str(int(args.measure)),
                "--rate", "50", "--format", "raw", "--threads", "--output",
                str(args.profile_out), stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
        t0 = time.monotonic()
        lags: list[float] = []
        lag_stop = asyncio.Event()
        lag_task = asyncio.create_task(loop_lag(lags, lag_stop))
        fleet.start_load(args.rate)
        await asyncio.sleep(args.measure / 2)
        t_burst = asyncio.get_running_loop().time()
        out["burst_wall"] = datetime.now().isoformat(timespec="milliseconds")
        fleet.burst(Burst(at=0, fraction=args.burst_fraction, alarms=2, spread=2.0,
                          reset_after=5.0))
        peak = 0
        end = t0 + args.measure
        while time.monotonic() < end:
            peak = max(peak, rss_kb(pid))
            await asyncio.sleep(0.5)
        fleet.stop_load()
        window = time.monotonic() - t0
        lag_stop.set()
        await lag_task
        lags.sort()
        out["loop_lag_ms"] = (lags[len(lags) // 2] * 1000, lags[int(len(lags) * 0.99)] * 1000)
        if spy is not None:
            await spy.wait()
        s1, own1 = sched(pid), sched(os.getpid())
        m1 = await asyncio.to_thread(scrape, metrics_port) if metrics_port else {}
        out["collector_wait"] = (s1[1] - s0[1]) / window
        out["fleet_wait"] = (own1[1] - own0[1]) / window
        writes = m1.get("write_seconds_count", 0) - m0.get("write_seconds_count", 0)
        out["writes_per_s"] = writes / window
        out["write_ms"] = ((m1["write_seconds_sum"] - m0["write_seconds_sum"]) / writes * 1000
                           if writes else 0.0)
        out["load_latency"] = fleet.ledger.latency_summary()
        out["windows"] = latency_windows(fleet.ledger, t_burst)
        if args.dump_latencies:  # (confirm time from the burst s, latency ms) per confirm
            args.dump_latencies.write_text("".join(
                f"{at - t_burst:.4f} {v * 1000:.3f}\n"
                for v, at in zip(fleet.ledger.latencies, fleet.ledger.latency_at, strict=True)))
        out["uploads_per_s"] = (fleet.ledger.counts["confirmed"] - confirmed0) / window
        out["collector_cpu"] = (cpu_s(pid) - c0[0]) / window
        out["fleet_cpu"] = (own_cpu_s() - c0[1]) / window
        out["load_peak_kb"] = peak
        out["drained"] = await fleet.drain(120)
        report = fleet.report()
    finally:
        fleet.stop()
    out["totals"] = report.totals()
    out["ok"] = report.ok
    out["alarms"] = len(report.ledger.alarms)
    if store is None:  # the codec centre keeps nothing
        out["alarms_stored_once"] = None
        return out
    await asyncio.sleep(1.0)
    stored = stored_fire_alarms(store)
    expected = Counter((a.uitd.gateway, f"gb26875/1-1/42-0x{a.detector:08x}",
                        round(datetime.fromisoformat(a.time).timestamp() * 1000))
                       for a in report.ledger.alarms)
    out["alarms_stored_once"] = stored == expected
    out["alarms_missing"] = sum((expected - stored).values())
    out["alarms_extra"] = sum((stored - expected).values())
    return out


def latency_windows(ledger: Any, t_burst: float) -> dict[str, tuple[int, float, float]]:
    """(count, p50 ms, p99 ms) of the confirms before the burst, in the 5 s from its start,
    and after: which part of the window makes the p99."""
    parts: dict[str, list[float]] = {"before burst": [], "burst + 5 s": [], "after": []}
    for value, at in zip(ledger.latencies, ledger.latency_at, strict=True):
        key = ("before burst" if at < t_burst else
               "burst + 5 s" if at < t_burst + 5.0 else "after")
        parts[key].append(value)
    out = {}
    for key, values in parts.items():
        values.sort()
        n = len(values)
        out[key] = (n, values[n // 2] * 1000 if n else 0.0,
                    values[min(n - 1, int(n * 0.99))] * 1000 if n else 0.0)
    return out


def summarize_profile(path: Path, top: int = 25) -> None:
    """Per thread, the share of samples; then the functions with the most samples in them
    (inclusive) and at the top of the stack (self), from py-spy's collapsed stacks."""
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        for f in set(frames[1:]):
            inclusive[_short(f)] += count
        leaf[_short(frames[-1])] += count
    print(f"profile: {total} samples")
    for name, k in threads.most_common(8):
        print(f"  thread {k / total:6.1%}  {name}")
    print("  inclusive:")
    for name, k in inclusive.most_common(top):
        print(f"  {k / total:6.1%}  {name}")
    print("  self:")
    for name, k in leaf.most_common(top):
        print(f"  {k / total:6.1%}  {name}")


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 2)
    return f"{name} ({'/'.join(file[-2:])})"


def stored_once(r: dict[str, Any]) -> str:
    if r["alarms_stored_once"] is None:
        return f"(no store; {r['alarms']:,} alarms confirmed)"
    return (f"{'yes' if r['alarms_stored_once'] else 'NO'} ({r['alarms']:,}; missing "
            f"{r['alarms_missing']}, extra {r['alarms_extra']})")


def collector_overrides(args: argparse.Namespace) -> dict[str, Any]:
    # The defaults of collector.example.toml (config_data has the tests' faster ones).
    out: dict[str, Any] = {"snapshot_interval_s": 5.0, "gap_grace_s": 60.0}
    if args.group_max_messages is not None:
        out |= {"group_max_messages": args.group_max_messages,
                "queue_size": max(256, 4 * args.group_max_messages)}
    return out


async def loop_lag(samples: list[float], stop: asyncio.Event, every: float = 0.05) -> None:
    """How late this process's event loop wakes a 50 ms timer: the fleet's own share of the
    confirm latency it measures."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(every)
        samples.append(loop.time() - t - every)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uitds", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=2000.0, help="analog uploads/s on top")
    ap.add_argument("--state-interval", type=float, default=60.0)
    ap.add_argument("--measure", type=float, default=30.0, help="seconds of the load window")
    ap.add_argument("--dump-latencies", type=Path, metavar="PATH",
                    help="write 'seconds-from-burst latency-ms' per confirm, for a timeline")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--connect-rate", type=float, default=1000.0)
    ap.add_argument("--burst-fraction", type=float, default=0.05)
    ap.add_argument("--py-spy", metavar="PATH", help="py-spy binary: profile the collector "
                    "over the load window (not a project dependency; pip install py-spy "
                    "anywhere)")
    ap.add_argument("--profile-out", type=Path, default=Path("uitd-centre.prof.txt"),
                    help="where py-spy's collapsed stacks go")
    ap.add_argument("--group-max-messages", type=int, default=None,
                    help="the collector's [collector] group_max_messages (default: its own)")
    ap.add_argument("--against", choices=("collector", "codec"), default="collector",
                    help="codec: the tests' centre made of the protocols/gb26875 codec alone "
                         "(tests/sim_uitd/helpers.py), in a process of its own; it stores "
                         "nothing, so it calibrates the fleet and the loopback")
    ap.add_argument("--serve-codec-centre", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    soft, hard = raise_nofile(args.uitds + 256)  # before the centre starts: inherited
    if args.serve_codec_centre is not None:
        asyncio.run(serve_codec_centre(args.serve_codec_centre))
        return
    r = run_codec(args) if args.against == "codec" else run_collector(args)
    report(args, r, soft, hard)


def run_codec(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-codec-centre", str(port)])
    try:
        wait_listening(port)
        return asyncio.run(drive(args, port, proc.pid, None, None))
    finally:
        proc.terminate()  # by PID: the process this script started
        proc.wait(timeout=30)


async def serve_codec_centre(port: int) -> None:
    from tests.sim_uitd.helpers import MiniCentre

    gc.freeze()
    centre = MiniCentre(keep=False)
    await centre.start(port)
    await asyncio.Event().wait()  # until SIGTERM


def run_collector(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        port, metrics_port = free_port(), free_port()
        store = Path(tmp) / "store.sqlite"
        data = config_data(Path(tmp) / "state", broker,
                           store={"sqlite": str(store), "retention_days": 0},
                           gb26875={"listen": f"127.0.0.1:{port}", "accept_unknown": True,
                                    "max_connections": max(20_000, args.uitds * 2),
                                    # the whole fleet dials from 127.0.0.1
                                    "max_connections_per_ip": max(20_000, args.uitds * 2)},
                           metrics={"listen": f"127.0.0.1:{metrics_port}"},
                           collector=collector_overrides(args))
        path = Path(tmp) / "collector.toml"
        path.write_text(tomli_w.dumps(data), encoding="utf-8")
        proc = CollectorProcess(path).start()
        try:
            wait_listening(port)
            return asyncio.run(drive(args, port, proc.pid, store, metrics_port))
        finally:
            proc.stop()


def report(args: argparse.Namespace, r: dict[str, Any], soft: int, hard: int) -> None:
    per_conn = (r["connected_kb"] - r["idle_kb"]) * 1024 / args.uitds
    lat, t = r["load_latency"], r["totals"]
    print(f"machine: {machine()}; {datetime.now().isoformat(timespec='minutes')}")
    print(f"RLIMIT_NOFILE soft/hard: bench {soft}/{hard} (now {r['bench_nofile']}), collector "
          f"{r['collector_nofile']}")
    print("| UITDs | connect + announce s | collector RSS idle / connected / peak under load "
          "MB | per connection KB | uploads/s confirmed | confirm latency p50 / p99 / p99.9 / "
          "max ms | CPU collector / fleet (cores) | every upload confirmed | fire alarms "
          "stored once |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.uitds:,} | {r['connect_s']:.1f} + {r['announced_s'] - r['connect_s']:.1f} "
          f"| {r['idle_kb'] / 1024:.0f} / {r['connected_kb'] / 1024:.0f} / "
          f"{r['load_peak_kb'] / 1024:.0f} | {per_conn / 1024:.1f} | {r['uploads_per_s']:,.0f} "
          f"| {lat['p50_ms']} / {lat['p99_ms']} / {lat['p999_ms']} / {lat['max_ms']} | "
          f"{r['collector_cpu']:.2f} / {r['fleet_cpu']:.2f} | "
          f"{'yes' if r['ok'] else 'NO ' + str(t)} | "
          f"{stored_once(r)} |")
    print(f"confirm latency while connecting (announce uploads): {r['idle_latency']}")
    if args.py_spy and args.profile_out.exists():
        summarize_profile(args.profile_out)
    print(f"burst at {r['burst_wall']}; confirm latency by part of the window: " + "; ".join(
        f"{k} {n:,} confirms p50 {a:.1f} / p99 {b:.1f} ms"
        for k, (n, a, b) in r["windows"].items()))
    print(f"fleet event loop lag under load: p50 {r['loop_lag_ms'][0]:.1f} ms, p99 "
          f"{r['loop_lag_ms'][1]:.1f} ms")
    centre = "collector" if args.against == "collector" else "codec centre"
    line = (f"under load: {centre} waited {r['collector_wait']:.2f} s per s for a core (run "
            f"queue, all threads), the fleet {r['fleet_wait']:.2f}")
    if r["writes_per_s"]:
        line += (f"; sink writes {r['writes_per_s']:.0f}/s, {r['write_ms']:.1f} ms each, "
                 f"{r['uploads_per_s'] / r['writes_per_s']:.0f} uploads per write")
    print(line)


if __name__ == "__main__":
    main()
