"""The collector as a GB/T 26875.3 monitoring centre (监控中心): UITDs dial in over TCP.

:class:`Centre` owns the listening socket, the links (:mod:`collector.uitd.link`) and the UITDs
it knows (:mod:`collector.uitd.device`). It runs on one asyncio loop: the collector's own in
``firegate collector run`` (a named task), or a thread of its own under
:meth:`collector.app.Collector.start`. Its only contact with the rest of the collector is the
writer's input queue (a thread-safe ``queue.Queue`` of :class:`~collector.ingest.Prepared`)
and the acknowledgements coming back (:mod:`collector.uitd.pipeline`): records of UITDs are
stored, de-duplicated, coloured and notified exactly as records that came over MQTT.

The rules, each from the standard or the issue (docs/gb26875-centre.md has the whole list):

* a UITD is known by the source address of its frames (表1); one link per UITD, a second
  connection from the same address replaces the first (counted, logged);
* an upload is confirmed only once its records are stored (图3); a retransmission is
  confirmed again and stored once (§6.5.5); a check error is denied (§6.5.3); keep-alives and
  handshakes are answered (``Session.acknowledge``);
* a UITD silent for ``silence_timeout_s`` gets a ``link_fault`` and goes offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import queue
import resource
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.ingest import Prepared
from collector.points import Storable
from collector.uitd.config import CentreConfig, UitdEntry, unknown_gateway_id
from collector.uitd.device import Answer, Device, Emit, Job, Upload
from collector.uitd.link import UitdLink
from collector.uitd.pipeline import batch_item, status_item
from protocols.gb26875 import Adu, Frame, Session, address_from_int, address_to_int
from protocols.panel_records import Mapped
from protocols.wire import Batch, Record

__all__ = ["STATE_FILE", "Centre", "CentreError"]

log = logging.getLogger("firegate.collector.uitd")
STATE_FILE = "uitd.json"
"""The centre's view, rewritten every few seconds in the state directory (``uitd list``)."""
SWEEP_S = 1.0
STATE_ROWS_PER_STEP = 250
"""UITDs put into ``uitd.json`` per loop callback (a few ms): the file is built in steps."""
STATE_EVERY_S = 5.0
"""``uitd.json`` is rewritten this often, or less often for a large fleet (below)."""
STATE_CPU_SHARE = 0.01
"""... at most this share of the loop's time goes to building it: the next build waits 100
times as long as the last one held the loop, summed over its steps (each step holds the GIL the
writer needs to confirm uploads: docs/benchmarks.md, issue 16)."""
RETRY_PUT_S = 0.01
LOG_EVERY_S = 60.0
MAX_DEVICES_FACTOR = 2
"""UITDs remembered (configured ones always): accepted unknown ones beyond
``max_connections`` x this are forgotten, oldest first, once they have no link."""


class CentreError(Exception):
    """A command that cannot be carried out; ``status`` is the HTTP status the API answers
    with: 400 bad arguments, 404 unknown UITD, 409 not connected or busy, 504 no answer."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class Centre:
    """Listening socket, links and UITDs; see the module docstring."""

    def __init__(self, config: CentreConfig, *, collector_id: str,
                 prepared: queue.Queue[Prepared], render: Callable[[Batch], Sequence[Storable]],
                 epoch: int, next_seqs: Mapping[str, int] | None = None,
                 previous: Mapping[str, Mapping[str, frozenset[str]]] | None = None,
                 state_dir: Path | None = None, heartbeat_s: float = 60.0) -> None:
        """``next_seqs``: gateway -> highest seq stored under ``epoch`` (the ledger);
        ``previous``: gateway -> source -> conditions active when the collector stopped."""
        self.config = config
        self.collector_id = collector_id
        self.prepared = prepared
        self.render = render
        self.epoch = epoch
        self._highest = dict(next_seqs or {})
        self._previous = previous or {}
        self.state_dir = state_dir
        self.heartbeat_s = heartbeat_s
        self.counters: Counter[str] = Counter()
        self.links: set[UitdLink] = set()
        self.devices: dict[str, Device] = {}  # by gateway id
        self._by_raw: dict[bytes, Device] = {}
        self._per_ip: Counter[str] = Counter()
        """Links open per peer IP address (``max_connections_per_ip``)."""
        self._unidentified: Counter[str] = Counter()
        """Of those, the links without a valid frame yet (``max_unidentified_per_ip``)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None
        self.ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._stop: asyncio.Event | None = None
        self._stop_asked = threading.Event()
        self._running = False
        self._logged: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self.error: CentreError | None = None
        """Why :meth:`serve` could not listen (a port in use)."""
        self._last_state = 0.0
        self._state_every = STATE_EVERY_S
        self._waiting_fire: deque[Prepared] = deque()
        self._waiting: deque[Prepared] = deque()
        """Items for the writer while its queue is full (bounded by the UITDs: each has at
        most one upload being stored, plus its status items)."""
        self._waiting_lock = threading.Lock()
        self.taken_by_writer = 0
        """Waiting items the writer took straight into a group (:meth:`take_waiting`)."""
        """The loop drains the waiting items into the writer's queue; the writer's thread
        takes them straight into its group (:meth:`take_waiting`)."""
        self._drain_timer: asyncio.TimerHandle | None = None
        self._state_job: _StateJob | None = None
        self._save_lock = threading.Lock()
        """The periodic ``uitd.json`` being built (:meth:`_write_state`)."""
        self._stored_lock = threading.Lock()
        self._stored_jobs: deque[tuple[Device, Job]] = deque()
        """Stored by the writer, to be confirmed on the loop (:meth:`_stored_soon`)."""
        self._stored_wake = False

    # -- running -------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Listen until :meth:`stop`; links are closed on the way out."""
        _raise_file_limit(self.config.max_connections)
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._running = True
        address = self.config.listen_address
        try:
            if address is not None:
                host, port = address
                try:
                    self._server = await self.loop.create_server(
                        lambda: UitdLink(self), host or None, port, reuse_address=True,
                        backlog=min(4096, self.config.max_connections))
                except OSError as exc:
                    self.error = CentreError(f"[gb26875] listen {host}:{port}: "
                                             f"{exc.strerror or exc}")
                    self.ready.set()
                    raise self.error from None
                sock = self._server.sockets[0].getsockname()
                self.port = int(sock[1])
                log.info("GB/T 26875.3 centre listening on %s:%d (%d UITDs configured, "
                         "unknown ones %s)", host, self.port, len(self.config.uitds),
                         "accepted" if self.config.accept_unknown else "refused")
            self.ready.set()
            while not self._stop.is_set() and not self._stop_asked.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), SWEEP_S)
                self.sweep(time.monotonic())
        finally:
            self._running = False
            if self._server is not None:
                self._server.close()
            for link in list(self.links):
                link.close("stopping")
            self._write_state(time.monotonic(), final=True)

    def stop(self) -> None:
        """Stop :meth:`serve` (from any thread, also before it has started)."""
        self._stop_asked.set()
        loop, stop = self.loop, self._stop
        if loop is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            loop.call_soon_threadsafe(stop.set)

    def start_thread(self) -> Centre:
        """:meth:`serve` on a thread of its own (``Collector.start()``); :meth:`join` ends it."""
        def main() -> None:
            with contextlib.suppress(CentreError):  # kept in self.error, raised below
                asyncio.run(self.serve())

        self._thread = threading.Thread(target=main, name="gb26875-centre", daemon=True)
        self._thread.start()
        if not self.ready.wait(30):
            raise CentreError("the GB/T 26875.3 centre did not start listening")
        if self.error is not None:
            raise self.error
        return self

    def join(self, timeout: float = 10.0) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- links ---------------------------------------------------------------------------------

    def opened(self, link: UitdLink) -> bool:
        if len(self.links) >= self.config.max_connections:
            self.counters["refused_max_connections"] += 1
            self._log_rarely("cap", "connection cap reached (max_connections = %d): %s refused",
                             self.config.max_connections, link.peer)
            link.close("max_connections")
            return False
        cap = self.config.max_connections_per_ip
        if self._unidentified[link.host] >= self.config.max_unidentified_per_ip or \
                (cap and self._per_ip[link.host] >= cap):
            self.counters["refused_per_ip"] += 1
            self._log_rarely("per_ip", "too many links from %s (max_unidentified_per_ip = %d, "
                             "max_connections_per_ip = %d): %s refused", link.host,
                             self.config.max_unidentified_per_ip, cap, link.peer)
            link.close("per_ip")
            return False
        self.links.add(link)
        self._per_ip[link.host] += 1
        self._unidentified[link.host] += 1
        self.counters["accepted"] += 1
        return True

    @staticmethod
    def _uncount(counter: Counter[str], host: str) -> None:
        counter[host] -= 1
        if counter[host] <= 0:
            del counter[host]

    def lost(self, link: UitdLink) -> None:
        if link in self.links:
            self.links.discard(link)
            self._uncount(self._per_ip, link.host)
            if link.device is None:
                self._uncount(self._unidentified, link.host)
        device = link.device
        if device is not None and device.link is link:
            device.link = None
        if device is not None:  # its queued uploads go: the UITD resends them (no confirm)
            kept = [j for j in device.jobs if not (isinstance(j, Upload) and j.link is link)]
            if len(kept) != len(device.jobs):
                self.counters["uploads_dropped_link_lost"] += len(device.jobs) - len(kept)
                device.jobs.clear()
                device.jobs.extend(kept)

    def identify(self, link: UitdLink, frame: Frame) -> Device | None:
        """The first valid frame of a link names its UITD; None: refused (link closed)."""
        device = self._by_raw.get(frame.source)
        if device is None:
            entry = self.config.lookup(frame.source)
            if entry is None and self.config.accept_unknown:
                entry = self._unknown_entry(frame.source)
            if entry is None:
                self.counters["refused_unknown"] += 1
                self._log_rarely("unknown", "refused a UITD with unknown address %s from %s "
                                 "(list it in [[gb26875.uitd]] or set accept_unknown)",
                                 frame.source.hex(), link.peer)
                link.close("unknown_uitd")
                return None
            device = self._device(entry)
        old = device.link
        if old is not None and old is not link and not old.closed:
            if not self._may_replace(device, old, link):
                return None
            self.counters["replaced"] += 1
            log.info("UITD %s connected again from %s: the link from %s is replaced",
                     device.gateway, link.peer, old.peer)
            old.close("replaced")
        device.link = link
        device.peer = link.peer
        if link.device is None and link in self.links:
            self._uncount(self._unidentified, link.host)
        link.device = device
        p = device.entry.profile
        # Our address: the configured one, else the one the UITD addresses us by (表1).
        local = address_from_int(self.config.centre_address, p.address_byte_order) \
            if self.config.centre_address else frame.destination
        link.session = Session(local, frame.source, p,
                               timeout=self.config.command_timeout_s,
                               retries=self.config.command_retries, clock=device.label,
                               memory=device.memory)
        return device

    def _may_replace(self, device: Device, old: UitdLink, link: UitdLink) -> bool:
        """Whether ``link`` may take ``device`` from ``old``. GB/T 26875.3 has no
        authentication: anyone reaching the port can claim a UITD's address, and the real UITD,
        pushed off, reconnects and pushes back. Past ``max_replacements`` within
        ``replace_window_s`` the held link stays (the newcomer is closed, counted) and an
        ``address_conflict`` link fault is raised, so that a person looks."""
        now = time.monotonic()
        window = self.config.replace_window_s
        times = device.replaced_at
        if times is None:
            times = device.replaced_at = deque()
        while times and now - times[0] >= window:
            times.popleft()
        if len(times) < self.config.max_replacements:
            times.append(now)
            return True
        self.counters["refused_replace_storm"] += 1
        device.conflict_at = now
        self._log_rarely(f"storm:{device.gateway}", "UITD %s: its address claimed again from "
                         "%s while held by %s, after %d replacements in %g s: refused "
                         "(address_conflict)", device.gateway, link.peer, old.peer,
                         len(times), window)
        if not device.conflict_raised:
            device.conflict_raised = True
            self.counters["address_conflicts"] += 1
            self._emit(device, [device.address_conflict(
                True, _ms(), f"address claimed from {link.peer} while held by {old.peer}: "
                             f"{len(times)} replacements in {window:g} s")])
        link.close("replace_storm")
        return False

    def _unknown_entry(self, raw: bytes) -> UitdEntry:
        p = self.config.unknown_profile
        gateway = unknown_gateway_id(address_to_int(raw, p.address_byte_order))
        return UitdEntry(address_to_int(raw, p.address_byte_order), gateway,
                         self.config.unknown_site or gateway, p)

    def _device(self, entry: UitdEntry) -> Device:
        device = self.devices.get(entry.gateway)
        if device is None:
            if len(self.devices) >= MAX_DEVICES_FACTOR * self.config.max_connections:
                self._forget_one()
            previous = {sid: frozenset(kinds) for sid, kinds in
                        self._previous.get(entry.gateway, {}).items()}
            device = Device.create(entry, self._highest.get(entry.gateway, 0) + 1, previous)
            self.devices[entry.gateway] = device
            self._by_raw[entry.raw_address] = device
        return device

    def _forget_one(self) -> None:
        listed = {u.gateway for u in self.config.uitds}
        for gw, d in self.devices.items():
            if gw not in listed and d.link is None and d.busy is None and not d.jobs:
                del self.devices[gw]
                self._by_raw.pop(d.entry.raw_address, None)
                self.counters["forgotten"] += 1
                return

    def valid_frame(self, device: Device, now: float) -> None:
        device.last_valid = now
        if not device.online:
            device.online = True
            device.last_heartbeat = now
            self._status(device, True, "uitd_connected")
            if device.fault_raised:
                device.fault_raised = False
                self._emit(device, [device.link_fault(False, _ms(), "UITD link restored")])

    # -- the pipeline --------------------------------------------------------------------------

    def enqueue(self, device: Device, link: UitdLink, frame: Frame) -> None:
        device.jobs.append(Upload(link, frame, _ms()))
        if sum(1 for j in device.jobs if isinstance(j, Upload) and j.link is link) \
                >= self.config.max_pending_uploads:
            link.pause()  # TCP pushes back; resumed when the UITD's uploads are stored
            self.counters["paused"] += 1
        self._pump(device)

    def _emit(self, device: Device, records: Sequence[Record],
              done: Callable[[], None] | None = None) -> None:
        device.jobs.append(Emit(records, done))
        self._pump(device)

    def _pump(self, device: Device) -> None:
        """Start the UITD's next job unless one is being stored (one at a time, in order)."""
        while device.busy is None and device.jobs:
            job = device.jobs.popleft()
            if isinstance(job, Upload):
                link = job.link
                if link.closed:
                    self.counters["uploads_dropped_link_lost"] += 1
                    continue
                what, answer = device.map_upload(job, time.monotonic())
                self.counters[what] += 1
                if answer is not None:
                    link.write(answer)
                    self.counters["confirmed" if what in ("duplicate", "empty") else
                                  "denied"] += 1
                if what != "store":
                    continue
                assert job.mapped is not None
                records: Sequence[Record] = job.mapped.records
                payload = job.frame.adu
            elif isinstance(job, Answer):
                if not device.map_answer(job):
                    job.done(job.adu, 0)
                    continue
                assert job.mapped is not None
                records, payload = job.mapped.records, job.frame.adu
            else:
                records = device.numbered(job.records)
                job.mapped = _numbered(records)
                payload = b""
            device.busy = job
            item = batch_item(device.gateway, device.entry.site, records, self.epoch,
                              self.render, payload, functools.partial(
                                  self._stored_soon, device, job), self._alive, _ms())
            self._put(item)
        self._resume(device)

    def _put(self, item: Prepared) -> None:
        """Hand ``item`` to the writer; when its queue is full, wait in the centre's own
        queue (fire alarms first, GB 26875.1 §4.1.2.3) drained by one timer, not one per item:
        10,000 UITDs uploading at once must not become 10,000 timers polling."""
        if not self._waiting_fire and not self._waiting:
            try:
                self.prepared.put_nowait(item)
                return
            except queue.Full:
                pass
        self.counters["writer_full"] += 1
        (self._waiting_fire if item.urgent else self._waiting).append(item)
        self._drain_later()

    def _drain_later(self) -> None:
        if self._drain_timer is None and self.loop is not None:
            self._drain_timer = self.loop.call_later(RETRY_PUT_S, self._drain)

    def _drain(self) -> None:
        self._drain_timer = None
        with self._waiting_lock:
            for waiting in (self._waiting_fire, self._waiting):
                while waiting:
                    try:
                        self.prepared.put_nowait(waiting[0])
                    except queue.Full:
                        self._drain_later()
                        return
                    waiting.popleft()

    def take_waiting(self, n: int, points: int) -> list[Prepared]:
        """For the writer's thread (``Writer.backlog``): up to ``n`` waiting items (fire
        alarms first) until ``points`` points are taken, straight into the group it is
        gathering - under a backlog one write then covers more uploads than the writer's
        queue holds. A UITD has at most one upload in the pipeline, so its order holds."""
        out: list[Prepared] = []
        with self._waiting_lock:
            for waiting in (self._waiting_fire, self._waiting):
                while waiting and len(out) < n and points > 0:
                    item = waiting.popleft()
                    points -= len(item.points or ())
                    out.append(item)
            self.taken_by_writer += len(out)
        return out

    def _alive(self) -> bool:
        return self._running

    def _stored_soon(self, device: Device, job: Job) -> None:
        """From the writer's thread: ``job`` is stored. Handed to the loop with one wake-up
        for all the jobs a write group stored, not one per job."""
        loop = self.loop
        if loop is None:
            return
        with self._stored_lock:
            self._stored_jobs.append((device, job))
            if self._stored_wake:
                return
            self._stored_wake = True
        with contextlib.suppress(RuntimeError):  # the loop is gone: the process is ending
            loop.call_soon_threadsafe(self._stored_all)

    def _stored_all(self) -> None:
        with self._stored_lock:
            jobs = list(self._stored_jobs)
            self._stored_jobs.clear()
            self._stored_wake = False
        for device, job in jobs:
            self._stored(device, job)

    def _stored(self, device: Device, job: Job) -> None:
        """The writer stored and committed ``job``: confirm it (图3), then the next job."""
        if device.busy is not job:
            return
        device.busy = None
        device.stored(job)
        n = len(job.mapped.records) if job.mapped is not None else 0
        self.counters["records_stored"] += n
        if isinstance(job, Upload):
            session = job.link.session
            if session is not None and not job.link.closed:
                job.link.write(session.acknowledge(job.frame))
                self.counters["confirmed"] += 1
            else:
                self.counters["confirm_lost"] += 1  # stored; the resend is a duplicate
        elif isinstance(job, Answer):
            job.done(job.adu, n)
        elif job.done is not None:
            job.done()
        self._pump(device)

    def _resume(self, device: Device) -> None:
        link = device.link
        if link is not None and link.paused and \
                len(device.jobs) < self.config.max_pending_uploads // 2 + 1:
            link.resume()

    def answer(self, device: Device, frame: Frame, done: Callable[[Adu | None, int], None]
               ) -> None:
        """A response to a read: stored in the UITD's order of jobs, then ``done``."""
        device.jobs.append(Answer(frame, _ms(), done))
        self._pump(device)

    def _status(self, device: Device, online: bool, reason: str) -> None:
        self._put(status_item(device.gateway, device.entry.site, online, reason, _ms(),
                              self._alive))

    # -- time ----------------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Once a second: silent links closed, silent UITDs faulted, heartbeats, state file."""
        timeout = self.config.silence_timeout_s
        ident = self.config.identify_timeout_s
        for link in [lk for lk in self.links if now - lk.last_valid > timeout or
                     (lk.device is None and now - lk.opened > ident)]:
            link.close("silence" if link.device is not None or now - link.opened > timeout
                       else "unidentified")
        for device in self.devices.values():
            if device.conflict_raised and now - device.conflict_at >= self.config.replace_window_s:
                device.conflict_raised = False  # a quiet window: no peer claims it any more
                self._emit(device, [device.address_conflict(
                    False, _ms(), "no conflicting claim for "
                                  f"{self.config.replace_window_s:g} s")])
            if device.online and now - device.last_valid > timeout:
                device.online = False
                self.counters["link_faults"] += 1
                log.warning("UITD %s silent for %.0f s: link fault, offline", device.gateway,
                            now - device.last_valid)
                self._status(device, False, "silence")
                if not device.fault_raised:
                    device.fault_raised = True
                    self._emit(device, [device.link_fault(
                        True, _ms(), f"no valid frame for {timeout:g} s")])
            elif device.online and now - device.last_heartbeat >= self.heartbeat_s:
                # The registry judges gateways by when they were last seen: a UITD that only
                # sends keep-alives is seen through these.
                device.last_heartbeat = now
                self._status(device, True, "uitd_connected")
        if now - self._last_state >= self._state_every:
            self._write_state(now)

    # -- downstream commands (loop thread) -------------------------------------------------------

    def device(self, name: str) -> Device:
        """A UITD by gateway id or address (``0x`` + 12 hex digits)."""
        device = self.devices.get(name)
        if device is None and name.lower().startswith("0x"):
            try:
                value = int(name, 16)
            except ValueError:
                value = -1
            device = next((d for d in self.devices.values() if d.entry.address == value), None)
        if device is None:
            if any(u.gateway == name for u in self.config.uitds):
                raise CentreError(f"UITD {name} is not connected (not since the collector "
                                  "started)")
            raise CentreError(f"no UITD {name[:64]!r}", 404)
        return device

    def status(self) -> dict[str, Any]:
        """Every UITD known, and the counters (``uitd list``, the API)."""
        now = time.monotonic()
        listed = {u.gateway: u for u in self.config.uitds}
        rows = [self._row(gw, listed, now) for gw in self._known()]
        return {**self._header(), "uitds": rows}

    def _known(self) -> list[str]:
        """Gateway ids of the configured UITDs, then of every other one known."""
        return list({**{u.gateway: None for u in self.config.uitds},
                     **dict.fromkeys(self.devices)})

    def _header(self) -> dict[str, Any]:
        return {"collector": self.collector_id, "listen": self.config.listen,
                "port": self.port, "connections": len(self.links),
                "updated_ms": _ms(), "running": self._running,
                "counters": dict(self.counters)}

    def _row(self, gw: str, listed: Mapping[str, UitdEntry], now: float) -> dict[str, Any]:
        d = self.devices.get(gw)
        if d is not None:
            return d.status(now)
        entry = listed[gw]
        return {"address": f"0x{entry.address:012x}", "gateway": gw,
                "site": entry.site, "profile": entry.profile.name,
                "connected": False, "online": False, "link_fault": False,
                "peer": "", "silent_s": None, "next_seq": None, "queued": 0,
                "counters": {}, "commands": []}

    def _write_state(self, now: float, final: bool = False) -> None:
        """``uitd.json``. The last one (``final``) at once; the periodic ones in steps of
        ``STATE_ROWS_PER_STEP`` UITDs between the loop's other callbacks, the file written
        off the loop: 10,000 UITDs make a few MB of JSON, which built in one go held the
        links' loop (and, encoded in a thread, the GIL) for tens of ms every few seconds."""
        self._last_state = now
        if self.state_dir is None:
            return
        path = self.state_dir / STATE_FILE
        if final or self.loop is None:
            self._state_job = None
            body = self.status()
            if final:
                body["running"] = False
            with self._save_lock:
                self._save(path, json.dumps(body, ensure_ascii=False))
            return
        if self._state_job is not None:  # the previous one is still being built
            return
        job = _StateJob(self._known(), {u.gateway: u for u in self.config.uitds})
        self._state_job = job
        self.loop.call_soon(self._state_step, job, path)

    def _state_step(self, job: _StateJob, path: Path) -> None:
        if self._state_job is not job or self.loop is None:
            return  # superseded by the final write
        started = time.perf_counter()
        now = time.monotonic()
        end = min(len(job.names), job.done + STATE_ROWS_PER_STEP)
        job.parts.extend(json.dumps(self._row(gw, job.listed, now), ensure_ascii=False)
                         for gw in job.names[job.done:end] if gw in self.devices or
                         gw in job.listed)
        job.done = end
        job.busy_s += time.perf_counter() - started
        if end < len(job.names):
            self.loop.call_soon(self._state_step, job, path)
            return
        self._state_job = None
        self._state_every = max(STATE_EVERY_S, job.busy_s / STATE_CPU_SHARE)
        head = json.dumps(self._header(), ensure_ascii=False)
        text = f'{head[:-1]}, "uitds": [{", ".join(job.parts)}]}}'
        self.loop.run_in_executor(None, self._save_periodic, path, text)

    def _save_periodic(self, path: Path, text: str) -> None:
        with self._save_lock:  # one writer of the file (and of its .tmp) at a time
            if self._running:  # the last file (running: false) is never overwritten
                self._save(path, text)

    def _save(self, path: Path, text: str) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            # Owner only (peers' addresses, commands and who gave them), written with
            # O_NOFOLLOW: a symlink planted in the state directory is not followed.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(fd, 0o600)
                f.write(text)
            os.replace(tmp, path)
        except OSError as exc:
            self._log_rarely("state", "cannot write %s: %s", path, exc)

    def _log_rarely(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[key] = now
            log.warning(msg + " (logged once a minute; counted)", *args)


def _raise_file_limit(links: int) -> None:
    """Each link is a file descriptor: raise the soft limit toward the hard one so that
    ``max_connections`` can be reached (the common default of 1,024 cannot), and say so when
    it still cannot (systemd: ``LimitNOFILE=``)."""
    want = links + 1024  # the store, the broker, the API, the state files
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit: %s", exc)
        return
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning("open-file limit %d is below max_connections (%d) + 1024: the centre will "
                    "refuse links before its cap (raise LimitNOFILE / ulimit -n)", soft, links)


@dataclass(slots=True)
class _StateJob:
    """A periodic ``uitd.json`` in the making: the UITDs to write, and their rows so far."""

    names: list[str]
    listed: dict[str, UitdEntry]
    parts: list[str] = field(default_factory=list)
    done: int = 0
    busy_s: float = 0.0  # how long its steps held the loop, summed


def _ms() -> int:
    return time.time_ns() // 1_000_000


def _numbered(records: Sequence[Record]) -> Mapped:
    return Mapped(tuple(records))

