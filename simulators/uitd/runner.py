"""Run a UITD fleet: build the UITDs, dial the centre, make load, bursts and drops, drain, close.

One asyncio loop drives every UITD (:class:`~.device.SimUitd`: a protocol and one timer each,
no task per UITD). The fleet's own timers are few: the connection ramp, the load generator,
one per burst and drop. :class:`UitdFleet` is the object tests hold (``async with``);
:func:`run_fleet` is a whole run for the command line and the benchmark.

The engines are the panel simulator's (:class:`~simulators.panel.engine.UitdEngine`); each UITD
gets ``detectors`` smoke detectors (表5 type 42, component addresses 1..n, system 1/1) and one
pressure sensor (type 99, analog type 5, address 9001) whose readings are the fleet's load.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import TracebackType

from common.backoff import Backoff
from protocols.gb26875 import ComponentAddress
from simulators.panel import ComponentSpec, PanelSpec, UitdEngine, UploadLedger
from simulators.panel.model import UitdSpec

from .config import NEVER, Burst, Drop, FleetSpec, UitdIdentity, identities, to_data
from .device import PRESSURE, SimUitd
from .ledger import FleetLedger, FleetReport

__all__ = ["FleetError", "Progress", "UitdFleet", "panel_spec", "raise_nofile", "run_fleet"]

RAMP_TICK = 0.01  # s between two slices of the connection ramp
LOAD_TICK = 0.005  # s between two rounds of the load generator
POLL = 0.05  # s between checks of a wait's condition
PRESSURE_ADDRESS = 9001


class FleetError(Exception):
    """A run that cannot start: the centre cannot be reached, too few file descriptors."""


@dataclass(frozen=True, slots=True)
class Progress:
    elapsed_s: float
    connected: int
    uitds: int
    uploads: int
    confirmed: int
    fire_alarms: int


def raise_nofile(need: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards ``need`` (up to the hard limit); returns the
    (soft, hard) limits now in force. FleetError when the hard limit is below ``need``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise FleetError(f"need about {need} file descriptors, the hard limit is {hard}: "
                             "raise it (ulimit -Hn, systemd LimitNOFILE=)")
        soft = hard if hard != resource.RLIM_INFINITY else need
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft, hard


async def preflight(host: str, port: int, timeout: float = 5.0) -> None:
    """One TCP connection to the centre, closed at once; FleetError if it cannot be made."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        why = _why(exc)
        raise FleetError(f"cannot reach the centre at {host}:{port}: {why}") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _why(exc: BaseException) -> str:
    """``connection refused`` rather than asyncio's ``Connect call failed (...)``."""
    errno = getattr(exc, "errno", None)
    return os.strerror(errno).lower() if errno else type(exc).__name__


def panel_spec(spec: FleetSpec) -> PanelSpec:
    """The panel every UITD of the fleet reports (its address and dialect set per UITD)."""
    comps = [ComponentSpec(f"smoke-{k}", 42, ComponentAddress.from_int(k), f"{k}号 感烟探测器")
             for k in range(1, spec.detectors + 1)]
    comps.append(ComponentSpec(PRESSURE, 99, ComponentAddress.from_int(PRESSURE_ADDRESS),
                               "消防泵 出水压力", analog_type=5, value=350.0))
    return PanelSpec(
        centre_address=spec.centre_address, confirm_timeout=spec.confirm_timeout,
        retries=spec.retries, periodic_interval=spec.state_interval,
        check_post_answer=spec.check_post_answer, components=tuple(comps),
        uitd=UitdSpec("firegate 模拟传输装置 (fleet)")).with_defaults()


class UitdFleet:
    """Every UITD of a :class:`FleetSpec`, on the running loop."""

    def __init__(self, spec: FleetSpec, *, progress: Callable[[Progress], None] | None = None,
                 progress_interval: float = 5.0) -> None:
        self.spec = spec
        self.ledger = FleetLedger()
        self.rng = random.Random(f"firegate-uitd-fleet/{spec.seed}")
        self.devices: list[SimUitd] = []
        self.progress = progress
        self.progress_interval = progress_interval
        self.t0 = 0.0  # loop time of the start
        self._wall0 = 0.0
        self._handles: list[asyncio.TimerHandle] = []
        self._load_issued = 0
        self._rate = spec.rate
        self._load_from = 0.0
        self._load_next = 0
        self._loading = False
        self._ramp_done = asyncio.Event()
        self._scheduled_alarms = 0  # burst alarms still to come

    async def __aenter__(self) -> UitdFleet:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- start and stop ---------------------------------------------------------------------------

    async def start(self, *, check: bool = True) -> None:
        """Build the UITDs and start dialing (ramped at ``connect_rate``); with ``check``, one
        test connection first so an unreachable centre is one clear :class:`FleetError`."""
        spec = self.spec
        raise_nofile(spec.uitds + 64)
        host, port = spec.host_port
        if check:
            await preflight(host, port)
        loop = asyncio.get_running_loop()
        self.t0, self._wall0 = loop.time(), time.monotonic()
        base = panel_spec(spec)
        slow = set(self.rng.sample(range(spec.uitds), round(spec.slow_fraction * spec.uitds)))
        now = datetime.now()
        for ident in identities(spec):
            # Each UITD's clock starts at a random phase of the state interval, so periodic
            # state uploads are spread over the interval instead of arriving in one wave.
            phase = self.rng.uniform(0, spec.state_interval) if spec.state_interval else 0.0
            # each UITD its own fault sequence (the same seed would hit every UITD alike)
            faults = replace(spec.faults, seed=spec.seed * 1_000_003 + ident.index)
            engine = UitdEngine(replace(base, uitd_address=ident.address, profile=ident.profile,
                                        faults=faults),
                                ledger=UploadLedger(max_entries=16, max_records=0,
                                                    describe=False),
                                start=now - timedelta(seconds=phase))
            backoff = Backoff(spec.reconnect_min, spec.reconnect_max, jitter=0.5,
                              rng=self.rng.random)
            self.devices.append(SimUitd(ident, engine, self.ledger, host=host, port=port,
                                        origin=self.t0 - phase, backoff=backoff,
                                        baud=spec.slow_baud if ident.index in slow else None,
                                        announce=spec.announce))
        for b in spec.bursts:
            self._at(b.at, self.burst, b)
        for d in spec.drops:
            self._at(d.at, self.drop, d)
        if spec.rate:
            self.start_load()
        if self.progress is not None:
            self._at(self.progress_interval, self._report_progress)
        self._ramp(0)

    def stop(self) -> None:
        """Close every link; cancel every timer."""
        self._loading = False
        for h in self._handles:
            h.cancel()
        self._handles.clear()
        for d in self.devices:
            d.stop()

    def _at(self, at: float, callback: Callable[..., object], *args: object) -> None:
        loop = asyncio.get_running_loop()
        self._handles.append(loop.call_at(self.t0 + at, callback, *args))

    def _ramp(self, start: int) -> None:
        per_tick = max(1, round(self.spec.connect_rate * RAMP_TICK))
        for d in self.devices[start:start + per_tick]:
            d.start()
        nxt = start + per_tick
        if nxt < len(self.devices):
            loop = asyncio.get_running_loop()
            self._handles.append(loop.call_later(RAMP_TICK, self._ramp, nxt))
        else:
            self._ramp_done.set()

    # -- what happens to the fleet ----------------------------------------------------------------

    def elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    def burst(self, b: Burst) -> int:
        """A fire alarm burst now; returns how many alarms it starts."""
        n = len(self.devices)
        chosen = self.rng.sample(range(n), max(1, round(b.fraction * n)))
        loop = asyncio.get_running_loop()
        started = 0
        for i in sorted(chosen):
            dev = self.devices[i]
            free = [k for k in range(1, self.spec.detectors + 1) if k not in dev.alarmed]
            last = 0.0  # this panel's last alarm: its reset comes reset_after s after it
            for k in self.rng.sample(free, min(len(free), b.alarms)):
                dev.alarmed.add(k)
                delay = self.rng.uniform(0, b.spread)
                last = max(last, delay)
                if delay > 0:
                    self._scheduled_alarms += 1
                    self._handles.append(loop.call_later(delay, self._fire, dev, k))
                else:
                    dev.fire_alarm(k)
                started += 1
            if b.reset_after != NEVER:
                # Each building's operator resets its own panel after its own alarms, not
                # all of them in the same instant (500 resets at once was a wave no fleet
                # makes: issue 16's bench).
                self._handles.append(loop.call_later(last + b.reset_after, dev.reset))
        self.ledger.count("burst_alarms", started)
        self.ledger.count("bursts")
        return started

    def _fire(self, dev: SimUitd, detector: int) -> None:
        self._scheduled_alarms -= 1
        dev.fire_alarm(detector)

    def drop(self, d: Drop) -> int:
        """Drop the links of a fraction of the connected UITDs now; returns how many."""
        online = [dev for dev in self.devices if dev.connected]
        if not online:
            return 0
        chosen = self.rng.sample(online, max(1, round(d.fraction * len(online))))
        return sum(dev.drop(d.duration) for dev in chosen)

    def start_load(self, rate: float | None = None) -> None:
        """Analog uploads at ``rate`` (default: the spec's) per second over the fleet, UITD
        after UITD (those not connected are passed over)."""
        self._rate = self.spec.rate if rate is None else rate
        self._loading = True
        self._load_from = self.elapsed()
        self._load_issued = 0
        self._load_tick()

    def stop_load(self) -> None:
        self._loading = False

    def _load_tick(self) -> None:
        if not self._loading:
            return
        due = int(self._rate * (self.elapsed() - self._load_from)) - self._load_issued
        n = len(self.devices)
        for _ in range(max(0, due)):
            for _ in range(n):  # the next connected UITD
                dev = self.devices[self._load_next]
                self._load_next = (self._load_next + 1) % n
                if dev.connected:
                    dev.analog(round(self.rng.uniform(250.0, 450.0), 1))
                    break
            else:
                self.ledger.count("load_skipped")
            self._load_issued += 1
        loop = asyncio.get_running_loop()
        self._handles.append(loop.call_later(LOAD_TICK, self._load_tick))
        if len(self._handles) > 4096:  # forget fired handles
            self._handles = [h for h in self._handles if not h.cancelled()
                             and h.when() > loop.time()]

    def _report_progress(self) -> None:
        assert self.progress is not None
        c = self.ledger.counts
        self.progress(Progress(self.elapsed(), self.connected, len(self.devices), c["uploads"],
                               c["confirmed"], len(self.ledger.alarms)))
        loop = asyncio.get_running_loop()
        self._handles.append(loop.call_later(self.progress_interval, self._report_progress))

    # -- state ------------------------------------------------------------------------------------

    @property
    def connected(self) -> int:
        return sum(d.connected for d in self.devices)

    @property
    def pending(self) -> int:
        return sum(d.engine.pending for d in self.devices)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` every 50 ms; False if ``timeout`` s pass first."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not predicate():
            if loop.time() >= end:
                return False
            await asyncio.sleep(POLL)
        return True

    async def wait_connected(self, timeout: float) -> bool:
        await self._ramp_done.wait()
        return await self.wait_until(lambda: self.connected == len(self.devices), timeout)

    async def drain(self, timeout: float) -> bool:
        """Stop the load and wait until the bursts' alarms are all raised and every UITD is
        connected with nothing left to send (resets still to come are not waited for)."""
        self.stop_load()
        return await self.wait_until(
            lambda: not self._scheduled_alarms
            and all(d.connected and not d.engine.pending for d in self.devices), timeout)

    def report(self) -> FleetReport:
        return FleetReport(to_data(self.spec), self.ledger, time.monotonic() - self._wall0,
                           len(self.devices), self.connected, self.pending)

    def identity(self, index: int) -> UitdIdentity:
        return self.devices[index].ident


async def run_fleet(spec: FleetSpec, *, duration: float, drain_timeout: float = 30.0,
                    progress: Callable[[Progress], None] | None = None,
                    progress_interval: float = 5.0, freeze: bool = False) -> FleetReport:
    """Run ``spec`` for ``duration`` s, drain for at most ``drain_timeout`` s, close, report.

    ``freeze``: once the UITDs are built, move them out of the garbage collector's sight
    (``gc.freeze``) - a process of its own does it, so that collections of millions of
    long-lived objects do not stall the loop (and show as confirm latency).
    FleetError before anything starts if the centre cannot be reached."""
    fleet = UitdFleet(spec, progress=progress, progress_interval=progress_interval)
    await fleet.start()
    if freeze:
        gc.collect()
        gc.freeze()
    try:
        await asyncio.sleep(max(0.0, duration - fleet.elapsed()))
        await fleet.drain(drain_timeout)
        return fleet.report()
    finally:
        fleet.stop()
