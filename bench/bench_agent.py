"""The whole edge agent as a process: fire-alarm latency under load, steady-state RSS and CPU.

Everything is real: ``firegate agent run --config FILE`` as a subprocess, a private Mosquitto
(``tests.infra.mosquitto``) on a free loopback port, the Modbus simulator (its own process, TCP),
a paho subscriber in this process that timestamps what arrives, and a real collector
(``python -m collector``, its own process and state directory) that stores the records and
publishes the ``stored`` confirmations: the agents keep every record until a collector confirms
it (``delete_on = "stored"``, docs/uplink.md), so without one their outboxes would never drain.
``--no-collector`` runs without it and sets ``delete_on = "puback"`` in the agents' configs
instead (the report says which). Each part reports the records the collector confirmed and the
rows left in the agent's outbox after it stopped. Two parts:

1. **Fire-alarm latency**, from the moment the last byte of the fire-alarm frame was written on
   the serial line to the moment the ``fire_alarm`` record arrives at the subscriber. This
   script plays the UITD itself: the simulator's engine (``simulators.panel``) runs in this
   process on a pty whose slave the agent opens, and every byte it writes goes through a tap
   that decodes the outgoing stream with the GB/T 26875.3 codec; when a component-state upload
   (type 2) with the fire-alarm bit completes, the time right after the ``os.write`` of its
   last byte is recorded. The agent's reads (61/62/81), clock sync (90) and confirms are
   answered by the engine. One alarm every ``--alarm-gap`` seconds (uniformly drawn), each
   from a detector of its own (a panel latches a fire alarm until it is reset, so the same
   detector would not alarm twice) and matched to its record by source id, on schedule
   whether or not the previous one has arrived, while ``--devices`` electrical fire
   detectors (``elec-fire``: 5
   measurements a read) are polled every ``--interval-s`` over Modbus TCP (10 x 0.05 s =
   1,000 measurements/s; no rules, no deadband). The measurement rate is taken from what
   reaches the subscriber. On loopback the broker acknowledges the agent's PUBLISH and
   forwards it to the subscriber in the same pass of its loop, so arrival at the subscriber
   is also, within a fraction of a millisecond, when the agent's PUBACK was sent.
   Target: p99 <= 50 ms.
2. **Steady state**: a fresh agent with its three drivers - a panel over a pty from
   ``firegate sim panel`` (periodic state uploads), the same Modbus load, BLE sensors from
   ``firegate sim ble`` over the mocked BlueZ (``DBUS_SYSTEM_BUS_ADDRESS`` of its private
   bus) - sampled once a second after a warm-up: RSS (``/proc/PID/status`` VmRSS) and CPU
   time (``/proc/PID/stat`` utime + stime, and per thread). Targets: RSS <= 50 MB, CPU <= 10 %
   of one core. Also the agent's writes to storage (``/proc/PID/io``) and the other
   processes' CPU. ``--profile FILE`` runs that agent under cProfile (figures then include
   the profiler's overhead) and prints where its main thread spends time.

What-ifs without touching the agent: ``--entry FILE.py`` runs your own launcher (``python
FILE.py CONFIG``); ``--agent-env KEY=VALUE`` adds to the agent's environment.

Every process is stopped by its PID at the end, also on Ctrl-C. Results go to stdout only
(``--json`` for a JSON document); progress goes to stderr. Timings are reported, never asserted.

    python bench/bench_agent.py [--alarms 100] [--devices 10] [--interval-s 0.05]
                                [--seconds 60] [--warmup 15] [--json] [--profile FILE]
                                [--entry firegate|FILE.py] [--agent-env KEY=VALUE]
                                [--no-collector]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import pstats
import random
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from protocols.gb26875 import (
    ApplicationData,
    Command,
    ComponentAddress,
    ComponentState,
    ComponentStatus,
    DecodeError,
    Profile,
    StreamDecoder,
    decode_adu,
)
from protocols.wire import (
    Batch,
    Bus,
    Event,
    EventType,
    Measurement,
    Source,
    decode_batch,
    decode_stored,
    encode_batches,
)
from simulators.panel import (
    ComponentSpec,
    Panel,
    PanelSpec,
    PtyTransport,
    ScaledClock,
    UitdEngine,
)
from simulators.panel.link import Connection
from tests.infra.mosquitto import Mosquitto
from tests.infra.simproc import FIREGATE, REPO

FIRST_DETECTOR = 5001  # component addresses of the part-1 detectors
WAIT_S = 30.0  # start-up bounds on a loaded machine
DRAIN_S = 3.0  # after a window, for its last records to arrive (rates by receive_ms)
ALARM_TIMEOUT_S = 10.0  # GB 26875.1: a fire alarm reaches the centre within 10 s
CLK_TCK = os.sysconf("SC_CLK_TCK")
WALL_OFFSET_NS = time.time_ns() - time.monotonic_ns()  # monotonic -> wall clock


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- processes -------------------------------------------------------------------------------


class Child:
    """A subprocess in its own session (Ctrl-C reaches only us), output to a log file."""

    def __init__(self, name: str, argv: list[str], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log, self.env = name, argv, log, env
        self.proc: asyncio.subprocess.Process | None = None
        self._out: IO[bytes] | None = None

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> Child:
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=REPO, stdout=self._out, stderr=asyncio.subprocess.STDOUT,
            env={**(self.env or os.environ), "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        return self

    async def line(self, has: str, timeout: float = WAIT_S) -> str:
        """The first output line containing ``has`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            for text in self.log.read_text(errors="replace").splitlines():
                if has in text:
                    return text
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"{self.name} exited: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no line with {has!r}: {self.tail()}")
            await asyncio.sleep(0.05)

    def tail(self, n: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    async def stop(self) -> int | None:
        """SIGTERM by PID, SIGKILL after 20 s; returns the exit status."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._out is not None:
            self._out.close()
            self._out = None
        return proc.returncode if proc is not None else None


# -- /proc sampling --------------------------------------------------------------------------


def cpu_ticks(pid: int, tid: int | None = None) -> int:
    """utime + stime of a process (or one of its threads), in clock ticks."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """Thread id -> (name, ticks)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            out[int(tid)] = (comm, cpu_ticks(pid, int(tid)))
    return out


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile (kB) and Threads from ``/proc/PID/status``."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for text in f:
            key, _, value = text.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"):
                out[key] = int(value.split()[0])
    return out


def io_bytes(pid: int) -> int:
    """Bytes the process caused to be written to storage (``/proc/PID/io`` write_bytes)."""
    with open(f"/proc/{pid}/io") as f:
        for text in f:
            if text.startswith("write_bytes:"):
                return int(text.split()[1])
    return 0


@dataclass
class Usage:
    """Once-a-second samples of one process over a window."""

    pid: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss kB, ticks)
    threads_start: dict[int, tuple[str, int]] = field(default_factory=dict)
    threads_end: dict[int, tuple[str, int]] = field(default_factory=dict)
    status_end: dict[str, int] = field(default_factory=dict)
    io: list[int] = field(default_factory=list)  # write_bytes at the first and last sample

    def sample(self) -> None:
        written = io_bytes(self.pid)
        self.io = [self.io[0] if self.io else written, written]
        self.samples.append((time.monotonic(), status_kb(self.pid)["VmRSS"],
                             cpu_ticks(self.pid)))

    async def run(self, seconds: float) -> None:
        self.threads_start = thread_ticks(self.pid)
        end = time.monotonic() + seconds
        self.sample()
        while time.monotonic() < end:
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
            self.sample()
        self.threads_end = thread_ticks(self.pid)
        self.status_end = status_kb(self.pid)

    def summary(self) -> dict[str, Any]:
        (t0, _, c0), (t1, _, c1) = self.samples[0], self.samples[-1]
        rss = [r / 1024 for _, r, _ in self.samples]
        per_s = [(b[2] - a[2]) / CLK_TCK / (b[0] - a[0]) * 100
                 for a, b in zip(self.samples, self.samples[1:], strict=False)]
        span = t1 - t0
        threads = sorted(((tid, (self.threads_end.get(tid, ("", ticks))[1] - ticks)
                           / CLK_TCK / span * 100)
                          for tid, (_, ticks) in self.threads_start.items()),
                         key=lambda x: -x[1])
        names = {tid: "main" if tid == self.pid else name
                 for tid, (name, _) in self.threads_start.items()}
        return {
            "window_s": round(span, 1),
            "cpu_pct": round((c1 - c0) / CLK_TCK / span * 100, 1),
            "cpu_pct_1s_median": round(statistics.median(per_s), 1),
            "cpu_pct_1s_max": round(max(per_s), 1),
            "cpu_pct_main_thread": round(dict(threads).get(self.pid, 0.0), 1),
            "cpu_pct_by_thread": {f"{names[t]} ({t})": round(p, 1) for t, p in threads
                                  if p >= 0.05},
            "rss_mb_max": round(max(rss), 1), "rss_mb_median": round(statistics.median(rss), 1),
            "rss_mb_min": round(min(rss), 1),
            "hwm_mb": round(self.status_end.get("VmHWM", 0) / 1024, 1),
            "rss_anon_mb": round(self.status_end.get("RssAnon", 0) / 1024, 1),
            "rss_file_mb": round(self.status_end.get("RssFile", 0) / 1024, 1),
            "threads": self.status_end.get("Threads", 0),
            "disk_write_mb_per_s": round((self.io[-1] - self.io[0]) / span / 2**20, 2),
        }


def cpu_of(pids: dict[str, list[int]]) -> dict[str, int]:
    """Ticks now of each named group of processes (for the other processes' share)."""
    out = {}
    for name, group in pids.items():
        total = 0
        for pid in group:
            with contextlib.suppress(OSError):
                total += cpu_ticks(pid)
        out[name] = total
    return out


# -- the centre: a subscriber in this process ------------------------------------------------


class Subscriber:
    """Receives ``firegate/v1/+/records`` and the collector's ``firegate/v1/+/stored`` in
    paho's thread: only the arrival time (monotonic ns), topic and payload are taken there;
    :meth:`pump` decodes on the event loop."""

    def __init__(self, port: int) -> None:
        self._raw: deque[tuple[int, str, bytes]] = deque()
        self.stored: dict[str, set[int]] = {}  # gateway -> seqs a collector confirmed
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-agent-centre",
                                  protocol=paho.MQTTv5)
        self.client.on_message = lambda _c, _u, m: self._raw.append(
            (time.monotonic_ns(), m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([("firegate/v1/+/records", 1), ("firegate/v1/+/stored", 1)])
        self.client.loop_start()
        if not subscribed.wait(WAIT_S):
            raise RuntimeError("subscriber: no SUBACK")

    def pump(self, flow: Flow | None) -> None:
        while self._raw:
            t, topic, payload = self._raw.popleft()
            if topic.endswith("/stored"):
                st = decode_stored(payload)
                seqs = self.stored.setdefault(st.gateway_id, set())
                for first, last in st.ranges:
                    seqs.update(range(first, last + 1))
                continue
            batch = decode_batch(payload)
            if flow is not None and batch.gateway_id == flow.gateway:
                flow.feed(t, batch)

    def confirmed(self, gateway: str) -> int:
        return len(self.stored.get(gateway, ()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Flow:
    """What one gateway delivered: measurements by bus, fire-alarm records, duplicates."""

    gateway: str
    seqs: set[int] = field(default_factory=set)
    duplicates: int = 0
    arrivals: list[int] = field(default_factory=list)  # measurement arrival, monotonic ns
    receive_ms: list[int] = field(default_factory=list)  # measurement receive_ms (agent)
    by_bus: Counter[str] = field(default_factory=Counter)  # records, measurements and events
    fires: dict[str, tuple[int, Event]] = field(default_factory=dict)  # source -> arrival
    messages: list[int] = field(default_factory=list)  # arrival of each records message

    def feed(self, t: int, batch: Batch) -> None:
        self.messages.append(t)
        for r in batch.records:
            if r.seq in self.seqs:
                self.duplicates += 1
                continue
            self.seqs.add(r.seq)
            self.by_bus[str(r.source.bus)] += 1
            if isinstance(r, Measurement):
                self.arrivals.append(t)
                self.receive_ms.append(r.receive_ms)
            elif r.type is EventType.FIRE_ALARM and r.active:
                self.fires.setdefault(r.source.id, (t, r))

    def rate(self, t0: int, t1: int) -> dict[str, float]:
        """Measurements/s that arrived between two monotonic-ns times, and the lowest and
        highest 1-s production rate (by the agent's receive_ms) inside that window."""
        n = sum(1 for t in self.arrivals if t0 <= t < t1)
        msgs = sum(1 for t in self.messages if t0 <= t < t1)
        w0, w1 = (t0 + WALL_OFFSET_NS) // 1_000_000, (t1 + WALL_OFFSET_NS) // 1_000_000
        buckets = Counter((ms - w0) // 1000 for ms in self.receive_ms if w0 <= ms < w1)
        full = [buckets.get(k, 0) for k in range((w1 - w0) // 1000)]
        return {"measurements_per_s": round(n / ((t1 - t0) / 1e9), 1),
                "per_s_min": min(full, default=0), "per_s_max": max(full, default=0),
                "messages_per_s": round(msgs / ((t1 - t0) / 1e9), 1)}


async def until(cond: Callable[[], bool], sub: Subscriber, flow: Flow | None,
                timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        sub.pump(flow)
        if cond():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.002)


def reached(t: float) -> Callable[[], bool]:
    return lambda: time.monotonic() >= t


# -- the confirming collector ---------------------------------------------------------------

PROBE_GW = "gw-bench-probe"


async def start_collector(tmp: Path, broker: int, sub: Subscriber,
                          stack: contextlib.AsyncExitStack) -> Child:
    """A real collector (``python -m collector``) storing into its own SQLite store and
    publishing ``stored``; ready once it has confirmed a probe gateway's record (its shared
    subscription is in place, so no agent record is sent before a collector can take it)."""
    config = tmp / "collector.toml"
    config.write_text(f"""[collector]
id = "bench-collector"
state_dir = "{tmp / 'collector'}"

[mqtt]
url = "mqtt://127.0.0.1:{broker}"

[metrics]
listen = ""
""", encoding="utf-8")
    child = await Child("collector", [sys.executable, "-m", "collector", "--config",
                                      str(config)], tmp / "collector.log").start()
    stack.push_async_callback(child.stop)
    await child.line("connected to")
    deadline = time.monotonic() + WAIT_S
    seq = 0
    while sub.confirmed(PROBE_GW) == 0:  # sent again each second until one is confirmed
        if child.exited or time.monotonic() > deadline:
            raise RuntimeError(f"collector confirms nothing: {child.tail()}")
        seq += 1
        probe = Event(source=Source("panel/9-9/system", Bus.GB26875), seq=seq,
                      type=EventType.OPERATION, receive_ms=time.time_ns() // 1_000_000,
                      operations=("self_test",))
        for payload in encode_batches(PROBE_GW, "site-bench", probe.receive_ms, [probe],
                                      epoch=1):
            sub.client.publish(f"firegate/v1/{PROBE_GW}/records", payload, qos=1)
        await until(lambda: sub.confirmed(PROBE_GW) > 0, sub, None, 1.0)
    say(f"collector pid {child.pid} confirming (delete_on = stored)")
    return child


def outbox_left(data_dir: Path) -> int | None:
    """Records still in a stopped agent's outbox (what nobody confirmed, or not sent)."""
    path = data_dir / "outbox.db"
    if not path.exists():
        return None
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


def delivery(sub: Subscriber, flow: Flow, data_dir: Path, collector: bool) -> dict[str, Any]:
    """Records that reached the subscriber, that the collector confirmed, left at stop."""
    sub.pump(flow)
    return {"records_at_subscriber": len(flow.seqs),
            "confirmed_by_collector": sub.confirmed(flow.gateway) if collector else None,
            "outbox_left_at_stop": outbox_left(data_dir)}


# -- part 1: the UITD on a pty, with a tap on what it writes ---------------------------------


def detectors(n: int) -> tuple[ComponentSpec, ...]:
    """``n`` smoke detectors (type 42) at addresses FIRST_DETECTOR...: each alarm is a new one,
    since a real panel latches a detector's fire alarm until the panel is reset."""
    return tuple(ComponentSpec(f"smoke-{k}", 42, ComponentAddress.from_int(FIRST_DETECTOR + k),
                               f"bench {k}") for k in range(n))


def source_id(address: int) -> str:
    return f"panel/1-1/42-0x{address:08x}"


def fire_addresses(adu: bytes, profile: Profile) -> list[int]:
    """Component addresses in fire alarm in a component-state upload (type 2)."""
    try:
        data = decode_adu(adu, profile)
    except DecodeError:
        return []
    if not isinstance(data, ApplicationData) or data.type_mark != 2:
        return []
    return [o.address.value for o in data.objects
            if isinstance(o, ComponentStatus) and o.state & ComponentState.FIRE_ALARM]


class TapConnection:
    """The engine's pty connection; after each write, the bytes go through a decoder and a
    completed fire-alarm upload is reported with the time its last byte was written."""

    def __init__(self, inner: Connection, profile: Profile,
                 on_fire: Callable[[int, list[int]], None]) -> None:
        self.inner, self.name, self.profile, self.on_fire = inner, inner.name, profile, on_fire
        self.decoder = StreamDecoder(profile)
        self.write_ns_max = 0

    async def read(self) -> bytes:
        return await self.inner.read()

    async def write(self, data: bytes) -> None:
        t0 = time.monotonic_ns()
        await self.inner.write(data)
        t = time.monotonic_ns()  # right after the last os.write: no await in between
        for item in self.decoder.feed(data):
            if not isinstance(item, DecodeError) and item.command == Command.SEND_DATA:
                fired = fire_addresses(item.adu, self.profile)
                if fired:
                    # How long the write call took bounds how late ``t`` can be.
                    self.write_ns_max = max(self.write_ns_max, t - t0)
                    self.on_fire(t, fired)

    def close(self) -> None:
        self.inner.close()


class TapTransport:
    """A :class:`PtyTransport` whose connections are tapped."""

    kind = "pty"

    def __init__(self, inner: PtyTransport, profile: Profile,
                 on_fire: Callable[[int, list[int]], None]) -> None:
        self.inner, self.profile, self.on_fire = inner, profile, on_fire
        self.address = ""
        self.taps: list[TapConnection] = []

    async def start(self) -> None:
        await self.inner.start()
        self.address = self.inner.address

    async def connections(self) -> AsyncIterator[Connection]:
        async for conn in self.inner.connections():
            tap = TapConnection(conn, self.profile, self.on_fire)
            self.taps.append(tap)
            yield tap

    async def stop(self) -> None:
        await self.inner.stop()


@dataclass
class Alarm:
    index: int
    component: ComponentSpec
    trigger_ns: int
    written_ns: int | None = None  # last byte of the first transmission on the pty
    transmissions: int = 0
    arrived_ns: int | None = None  # the fire_alarm record at the subscriber
    receive_ms: int | None = None  # the agent's receive time (wall ms, from the record)

    @property
    def latency_ms(self) -> float | None:
        if self.written_ns is None or self.arrived_ns is None:
            return None
        return (self.arrived_ns - self.written_ns) / 1e6


def agent_config(tmp: Path, gw: str, broker: int, modbus: str | None, args: argparse.Namespace,
                 panel: str, ble: list[str] | None = None) -> Path:
    devices = "".join(f"""
[[modbus.device]]
unit = {i}
profile = "elec-fire"
interval_s = {args.interval_s}
""" for i in range(1, args.devices + 1))
    sensors = "".join(f"""
[[ble.device]]
address = "{a}"
expected_interval_s = {args.ble_interval}
""" for a in ble or [])
    text = f"""
[gateway]
id = "{gw}"
site = "site-bench"
data_dir = "{tmp / gw}"
log_level = "info"

[uplink]
url = "mqtt://127.0.0.1:{broker}"
{'delete_on = "puback"  # --no-collector: nobody confirms stored' if args.no_collector else ''}

[[panel]]
name = "com1"
port = "{panel}"

{bus(modbus, args.devices)}
{devices}
{"[ble]" if ble else ""}
{sensors}
"""
    path = tmp / f"{gw}.toml"
    path.write_text(text, encoding="utf-8")
    return path


# For --profile only: the same entry point under cProfile, timed with the main thread's CPU
# clock (cProfile sees that thread only), and every other thread named for /proc (comm) so the
# per-thread CPU figures say whose they are.
PROFILED = """
import cProfile, ctypes, sys, threading, time
libc = ctypes.CDLL(None)
start = threading.Thread._bootstrap_inner
def named(self):
    libc.prctl(15, self.name[:15].encode(), 0, 0, 0)  # PR_SET_NAME
    start(self)
threading.Thread._bootstrap_inner = named
from firegate.entry import main
out, sys.argv = sys.argv[1], ["firegate", *sys.argv[2:]]
prof = cProfile.Profile(time.thread_time)
try:
    prof.runcall(main)
except SystemExit:
    pass
finally:
    prof.dump_stats(out)
"""


def bus(modbus: str | None, devices: int) -> str:
    """The ``[[modbus]]`` table (TCP, no gap between requests), none without devices."""
    if modbus is None or not devices:
        return ""
    host, port = modbus.rsplit(":", 1)
    return f"""[[modbus]]
name = "bus1"
host = "{host}"
tcp_port = {port}
timeout_s = 0.5
gap_ms = 0"""


def agent_argv(config: Path, entry: str = "firegate", profile: Path | None = None
               ) -> list[str]:
    if profile is not None:
        return [sys.executable, "-c", PROFILED, str(profile), "agent", "run", "--config",
                str(config)]
    if entry != "firegate":  # a what-if launcher of your own: python FILE CONFIG
        return [sys.executable, entry, str(config)]
    return [FIREGATE, "agent", "run", "--config", str(config)]


def agent_env(args: argparse.Namespace) -> dict[str, str]:
    """This environment plus ``--agent-env KEY=VALUE`` settings."""
    extra = dict(item.split("=", 1) for item in args.agent_env)
    return {**os.environ, **extra}


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"n": len(values), "p50": round(pct(values, 50), 2), "p90": round(pct(values, 90), 2),
            "p99": round(pct(values, 99), 2), "max": round(max(values), 2),
            "mean": round(statistics.fmean(values), 2)}


async def part_latency(args: argparse.Namespace, tmp: Path, broker: int, modbus: str | None,
                       sub: Subscriber, stack: contextlib.AsyncExitStack) -> dict[str, Any]:
    gw = "gw-bench-latency"
    flow = Flow(gw)
    parts = detectors(args.alarms)
    engine = UitdEngine(PanelSpec(components=parts))
    by_address: dict[int, Alarm] = {}

    def on_fire(t: int, addresses: list[int]) -> None:
        for address in addresses:
            a = by_address.get(address)
            if a is not None:
                a.transmissions += 1
                if a.written_ns is None:
                    a.written_ns = t

    transport = TapTransport(PtyTransport(tmp / "uitd-tty"), engine.profile, on_fire)
    panel = Panel(engine, transport, ScaledClock(1.0), pace=args.baud or None)
    await panel.start()
    stack.push_async_callback(panel.stop)
    config = agent_config(tmp, gw, broker, modbus, args, str(tmp / "uitd-tty"))
    agent = await Child("agent (latency)", agent_argv(config, args.entry), tmp / f"{gw}.log",
                        agent_env(args)).start()
    stack.push_async_callback(agent.stop)
    say(f"part 1: agent pid {agent.pid}, UITD on {transport.address}, waiting for data")
    def ready() -> bool:  # the UITD is connected and measurements arrive (if any are polled)
        return engine.connected and (modbus is None or len(flow.arrivals) > 0)

    if not await until(lambda: agent.exited or ready(), sub, flow, WAIT_S) or agent.exited:
        raise RuntimeError(f"agent not delivering: {agent.tail()}")
    await until(lambda: False, sub, flow, args.settle)  # the agent's reads at connect settle
    rng = random.Random(args.seed)
    alarms: list[Alarm] = []
    usage = Usage(agent.pid)
    usage.sample()
    t_start = time.monotonic_ns()
    next_at = time.monotonic()
    for k, part in enumerate(parts):  # on schedule, whether or not the last one arrived
        await until(reached(next_at), sub, flow, WAIT_S)
        next_at = time.monotonic() + rng.uniform(*args.alarm_gap)
        alarm = Alarm(k, part, time.monotonic_ns())
        by_address[part.address.value] = alarm
        alarms.append(alarm)
        panel.trigger("fire_alarm", component=part.id)
        if k % 20 == 19:
            say(f"  {k + 1} alarms, {len(flow.fires)} at the centre")
    await until(lambda: len(flow.fires) >= len(alarms), sub, flow, ALARM_TIMEOUT_S)
    t_end = time.monotonic_ns()
    usage.sample()
    await until(lambda: False, sub, flow, DRAIN_S)  # the last measurements of the window
    code = await agent.stop()
    for alarm in alarms:
        got = flow.fires.get(source_id(alarm.component.address.value))
        if got is not None:
            alarm.arrived_ns, alarm.receive_ms = got[0], got[1].receive_ms
    lat = [a.latency_ms for a in alarms if a.latency_ms is not None]
    to_agent = [a.receive_ms - (a.written_ns + WALL_OFFSET_NS) / 1e6 for a in alarms
                if a.receive_ms is not None and a.written_ns is not None]
    to_centre = [(a.arrived_ns + WALL_OFFSET_NS) / 1e6 - a.receive_ms for a in alarms
                 if a.receive_ms is not None and a.arrived_ns is not None]
    u = usage.summary()
    return {
        "alarms": len(alarms), "delivered": len(lat),
        "missing": [a.index for a in alarms if a.arrived_ns is None],
        "not_seen_on_the_line": sum(1 for a in alarms if a.written_ns is None),
        "resent": sum(1 for a in alarms if a.transmissions > 1),
        "latency_ms": spread(lat),
        "latency_samples_ms": [round(x, 2) for x in lat],
        "line_to_agent_receive_ms": spread(to_agent),
        "agent_receive_to_centre_ms": spread(to_centre),
        "write_call_max_ms": round(max((t.write_ns_max for t in transport.taps),
                                       default=0) / 1e6, 3),
        "measurements": flow.rate(t_start, t_end),
        "duration_s": round((t_end - t_start) / 1e9, 1),
        "duplicates": flow.duplicates,
        "agent_cpu_pct": u["cpu_pct"], "agent_rss_mb": u["rss_mb_max"],
        "agent_exit": code,
        "delivery": delivery(sub, flow, tmp / gw, not args.no_collector),
        "uitd": {"uploads": engine.ledger.counts.get("queued", 0),
                 "confirmed": engine.ledger.counts.get("confirmed", 0),
                 "failed": engine.ledger.counts.get("failed", 0)},
    }


# -- part 2: three drivers, steady state -----------------------------------------------------

BLE_KINDS = ("pressure", "temperature", "door", "smoke")


async def part_steady(args: argparse.Namespace, tmp: Path, broker: Mosquitto,
                      modbus: Child | None, address: str | None,
                      sub: Subscriber, stack: contextlib.AsyncExitStack,
                      collector: Child | None = None) -> dict[str, Any]:
    gw = "gw-bench-steady"
    flow = Flow(gw)
    link = tmp / "panel-tty"
    panel = await Child("sim panel", [FIREGATE, "sim", "panel", "--pty", "--link", str(link),
                                      "--periodic", str(args.panel_periodic)],
                        tmp / "sim-panel.log").start()
    stack.push_async_callback(panel.stop)
    await panel.line("listening pty")
    env = dict(os.environ)
    others: dict[str, list[int]] = {"mosquitto": [broker.pid or 0], "sim panel": [panel.pid]}
    if modbus is not None:
        others["sim modbus"] = [modbus.pid]
    if collector is not None:
        others["collector"] = [collector.pid]
    addresses = [f"A4:C1:38:00:02:{i:02X}" for i in range(1, args.ble_sensors + 1)]
    if addresses:
        ble = await Child("sim ble", [
            FIREGATE, "sim", "ble", "--quiet", "--interval", str(args.ble_interval),
            *(f for i, a in enumerate(addresses)
              for f in ("--sensor", f"{BLE_KINDS[i % len(BLE_KINDS)]}:{a}"))],
            tmp / "sim-ble.log").start()
        stack.push_async_callback(ble.stop)
        bus = (await ble.line("export DBUS_SYSTEM_BUS_ADDRESS=")).split("=", 1)[1].strip()
        env["DBUS_SYSTEM_BUS_ADDRESS"] = bus.strip("'")
        bus_pids = [int(p) for p in (await ble.line("pids")).split("pids", 1)[1].split()]
        others["sim ble (+ dbus-daemon, dbusmock)"] = [ble.pid, *bus_pids]
    config = agent_config(tmp, gw, broker.port, address, args, str(link), addresses)
    env.update(agent_env(args))
    agent = await Child("agent (steady)", agent_argv(config, args.entry, args.profile),
                        tmp / f"{gw}.log", env).start()
    stack.push_async_callback(agent.stop)
    say(f"part 2: agent pid {agent.pid}, three drivers, warming up {args.warmup:g} s")

    def flowing() -> bool:
        return ((modbus is None or flow.by_bus["modbus"] > 0)
                and (not addresses or flow.by_bus["ble"] > 0))

    if not await until(lambda: agent.exited or flowing(), sub, flow, WAIT_S) or agent.exited:
        raise RuntimeError(f"agent not delivering from every bus: {dict(flow.by_bus)}; "
                           f"{agent.tail()}")
    await panel.line("connected")
    await until(lambda: False, sub, flow, args.warmup)
    usage = Usage(agent.pid)
    before, buses0 = cpu_of(others), Counter(flow.by_bus)
    t0 = time.monotonic_ns()
    sampler = asyncio.create_task(usage.run(args.seconds))
    while not sampler.done():
        await until(sampler.done, sub, flow, 1.0)
    await sampler
    t1 = time.monotonic_ns()
    after = cpu_of(others)
    span = (t1 - t0) / 1e9
    per_bus = {bus: round((n - buses0[bus]) / span, 1) for bus, n in flow.by_bus.items()}
    await until(lambda: False, sub, flow, DRAIN_S)  # the last measurements of the window
    code = await agent.stop()
    result: dict[str, Any] = {
        "drivers": ["panel", *(["modbus"] if modbus else []), *(["ble"] if addresses else [])],
        "panel_uploads_confirmed": sum("confirmed t=" in line
                                       for line in panel.log.read_text().splitlines()),
        "agent": usage.summary(),
        "measurements": flow.rate(t0, t1),
        "records_per_s_by_bus": per_bus,
        "other_cpu_pct": {k: round((after[k] - before[k]) / CLK_TCK / span * 100, 1)
                          for k in others},
        "agent_exit": code, "profiled": args.profile is not None,
        "delivery": delivery(sub, flow, tmp / gw, collector is not None),
    }
    if args.profile is not None:
        result["profile_top"] = profile_top(args.profile)
    return result


def profile_top(path: Path, n: int = 25) -> list[str]:
    """The agent's main thread by own time (cProfile sees that thread only)."""
    if not path.exists():
        return [f"no profile written at {path}"]
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    head = [f"main-thread CPU under the profiler: {total:.1f} s; % of it, own / cumulative:"]
    for key, order in (("own", 2), ("cumulative", 3)):
        head.append(f"-- by {key} time")
        rows = sorted(raw.items(), key=lambda kv: -kv[1][order])[:n]
        head += [f"{v[2] / total * 100:5.1f} {v[3] / total * 100:5.1f} {v[1]:>8} "
                 f"{_short(f)}:{line} {fn}" for (f, line, fn), v in rows]
    return head


def _short(path: str) -> str:
    """A profile's file name, relative to the repository or site-packages."""
    for marker in ("site-packages/", "python3.11/", str(REPO) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# -- report ------------------------------------------------------------------------------------


def report(doc: dict[str, Any]) -> str:
    out = [f"bench_agent {doc['date']}: {doc['machine']}", f"command: {doc['command']}",
           f"agent: {doc['settings']['entry']} entry point, extra env "
           f"{doc['settings']['agent_env'] or 'none'}",
           f"load average before {doc['load_before']}, after {doc['load_after']}",
           "confirming subscriber: " + (
               "none (--no-collector): the agents delete on the broker's PUBACK "
               "(delete_on = \"puback\")" if doc["settings"]["no_collector"] else
               "a real collector process (python -m collector) storing the records and "
               "publishing stored (delete_on = \"stored\", the default)")]

    def delivered(d: dict[str, Any]) -> str:
        confirmed = d["confirmed_by_collector"]
        return (f"   delivery: {d['records_at_subscriber']:,} records at the subscriber, "
                f"{'-' if confirmed is None else format(confirmed, ',')} confirmed stored by "
                f"the collector, {d['outbox_left_at_stop']} left in the agent's outbox after "
                "it stopped")
    lat = doc.get("latency")
    if lat:
        q, m = lat["latency_ms"], lat["measurements"]
        a1, a2 = lat["line_to_agent_receive_ms"], lat["agent_receive_to_centre_ms"]
        out += [
            "", "1. fire alarm: last byte on the serial line -> record at the subscriber",
            f"   {lat['delivered']}/{lat['alarms']} alarms in {lat['duration_s']} s; "
            f"p50 {q.get('p50')} ms, p90 {q.get('p90')} ms, p99 {q.get('p99')} ms, "
            f"max {q.get('max')} ms, mean {q.get('mean')} ms  (target p99 <= 50 ms)",
            f"   of which line -> agent receive_ms: p50 {a1.get('p50')} / p99 {a1.get('p99')}"
            f" ms; agent -> subscriber: p50 {a2.get('p50')} / p99 {a2.get('p99')} ms "
            "(the record's ms clock)",
            f"   meanwhile {m['measurements_per_s']:,} measurements/s reached the broker "
            f"(1-s production {m['per_s_min']:,}-{m['per_s_max']:,}) in "
            f"{m['messages_per_s']:,} messages/s; agent CPU {lat['agent_cpu_pct']} %, RSS "
            f"{lat['agent_rss_mb']} MB",
            "   (on loopback the broker sends the agent's PUBACK and the subscriber's copy in "
            "the same pass of its loop;",
            "   the write call that ended a fire-alarm frame took at most "
            f"{lat['write_call_max_ms']} ms)",
            f"   missing {lat['missing'] or 'none'}, not seen on the line "
            f"{lat['not_seen_on_the_line']}, resent {lat['resent']}, duplicates "
            f"{lat['duplicates']}, UITD uploads {lat['uitd']}, agent exit {lat['agent_exit']}",
            delivered(lat["delivery"])]
    st = doc.get("steady")
    if st:
        a, m = st["agent"], st["measurements"]
        out += [
            "", f"2. steady state, drivers {', '.join(st['drivers'])}, {a['window_s']} s after "
            "the warm-up"
            + (" (UNDER cProfile: inflated)" if st["profiled"] else ""),
            f"   RSS max {a['rss_mb_max']} MB, median {a['rss_mb_median']} MB (anon "
            f"{a['rss_anon_mb']}, file {a['rss_file_mb']}; high-water {a['hwm_mb']} MB)  "
            f"(target <= 50 MB)",
            f"   CPU {a['cpu_pct']} % of one core (1-s median {a['cpu_pct_1s_median']}, max "
            f"{a['cpu_pct_1s_max']}); main thread {a['cpu_pct_main_thread']} %, threads "
            f"{a['cpu_pct_by_thread']} of {a['threads']}  (target <= 10 %)",
            f"   {m['measurements_per_s']:,} measurements/s at the broker (1-s production "
            f"{m['per_s_min']:,}-{m['per_s_max']:,}) in {m['messages_per_s']:,} messages/s; "
            f"records/s by bus {st['records_per_s_by_bus']}",
            f"   agent's writes to storage {a['disk_write_mb_per_s']} MiB/s (/proc/PID/io)",
            f"   other processes, % of one core: {st['other_cpu_pct']}; panel uploads "
            f"confirmed {st['panel_uploads_confirmed']}; agent exit {st['agent_exit']}",
            delivered(st["delivery"])]
        out += ["   " + line for line in st.get("profile_top", [])]
    return "\n".join(out)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as name:
        tmp = Path(name)
        async with contextlib.AsyncExitStack() as stack:
            broker = Mosquitto(tmp / "broker").start()
            stack.callback(broker.stop)
            sub = Subscriber(broker.port)
            stack.callback(sub.close)
            collector = None if args.no_collector else \
                await start_collector(tmp, broker.port, sub, stack)
            modbus, address = None, None
            if args.devices:
                modbus = await Child("sim modbus", [
                    FIREGATE, "sim", "modbus", "--tcp", "127.0.0.1:0",
                    *(f for i in range(1, args.devices + 1)
                      for f in ("--device", f"{i}:elec-fire"))], tmp / "sim-modbus.log").start()
                stack.push_async_callback(modbus.stop)
                address = (await modbus.line("listening tcp")).split()[2]
            if args.alarms:
                async with contextlib.AsyncExitStack() as part:
                    doc["latency"] = await part_latency(args, tmp, broker.port, address, sub,
                                                        part)
            if args.seconds:
                async with contextlib.AsyncExitStack() as part:
                    doc["steady"] = await part_steady(args, tmp, broker, modbus, address,
                                                      sub, part, collector)
    doc["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--alarms", type=int, default=100, help="fire alarms in part 1 (0: skip)")
    ap.add_argument("--alarm-gap", type=float, nargs=2, default=(0.5, 1.0),
                    metavar=("MIN", "MAX"), help="seconds between alarms, drawn uniformly")
    ap.add_argument("--baud", type=int, default=9600,
                    help="pace the UITD's writes like a UART at this speed (0: unpaced)")
    ap.add_argument("--devices", type=int, default=10, help="elec-fire devices (5 points each)")
    ap.add_argument("--interval-s", type=float, default=0.05, help="poll interval per device")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds after the first data before the first alarm")
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="part 2 sampling window (0: skip)")
    ap.add_argument("--warmup", type=float, default=15.0, help="part 2 warm-up, seconds")
    ap.add_argument("--ble-sensors", type=int, default=6)
    ap.add_argument("--ble-interval", type=float, default=1.0, help="advert interval, seconds")
    ap.add_argument("--panel-periodic", type=float, default=10.0,
                    help="the panel simulator's periodic state uploads, seconds")
    ap.add_argument("--seed", type=int, default=26875)
    ap.add_argument("--profile", type=Path, help="run the part-2 agent under cProfile")
    ap.add_argument("--entry", default="firegate", metavar="firegate|FILE.py",
                    help="how the agent starts: firegate agent run (default); FILE.py: a "
                         "what-if launcher run as python FILE.py CONFIG")
    ap.add_argument("--agent-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the agent (e.g. MALLOC_ARENA_MAX=2)")
    ap.add_argument("--no-collector", action="store_true",
                    help="no confirming collector: the agents get delete_on = \"puback\" "
                         "(their records deleted on the broker's PUBACK)")
    ap.add_argument("--json", action="store_true", help="print a JSON document instead")
    args = ap.parse_args()
    # The UITD's write timestamps are taken on this process's event loop; a paho thread
    # holding the GIL could delay them by up to the switch interval (5 ms by default).
    sys.setswitchinterval(0.0005)
    # Ctrl-C cancels the run and every process is stopped by PID on the way out, also when
    # this script was started in the background (where SIGINT arrives ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        doc = asyncio.run(run(args))
    except KeyboardInterrupt:
        say("interrupted; every process stopped")
        raise SystemExit(130) from None
    print(json.dumps(doc, ensure_ascii=False, indent=1) if args.json else report(doc))


if __name__ == "__main__":
    main()
