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
        self._waiting_fire: deque[Prepared] = deque()
        self._waiting: deque[Prepared] = deque()
        """Items for the writer while its queue is full (bounded by the UITDs: each has at
        most one upload being stored, plus its status items)."""
        self._drain_timer: asyncio.TimerHandle | None = None

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
        if self._per_ip[link.host] >= self.config.max_connections_per_ip:
            self.counters["refused_per_ip"] += 1
            self._log_rarely("per_ip", "too many links from %s (max_connections_per_ip = %d): "
                             "%s refused", link.host, self.config.max_connections_per_ip,
                             link.peer)
            link.close("per_ip")
            return False
        self.links.add(link)
        self._per_ip[link.host] += 1
        self.counters["accepted"] += 1
        return True

    def lost(self, link: UitdLink) -> None:
        if link in self.links:
            self.links.discard(link)
            self._per_ip[link.host] -= 1
            if self._per_ip[link.host] <= 0:
                del self._per_ip[link.host]
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
        if old is not None and old is not link:
            if not self._may_replace(device, old, link):
                return None
            self.counters["replaced"] += 1
            log.info("UITD %s connected again from %s: the link from %s is replaced",
                     device.gateway, link.peer, old.peer)
            old.close("replaced")
        device.link = link
        device.peer = link.peer
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
        for waiting in (self._waiting_fire, self._waiting):
            while waiting:
                try:
                    self.prepared.put_nowait(waiting[0])
                except queue.Full:
                    self._drain_later()
                    return
                waiting.popleft()

    def _alive(self) -> bool:
        return self._running

    def _stored_soon(self, device: Device, job: Job) -> None:
        loop = self.loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: the process is ending
            loop.call_soon_threadsafe(self._stored, device, job)

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
        if now - self._last_state >= 5.0:
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
        known = {**{u.gateway: None for u in self.config.uitds}, **dict.fromkeys(self.devices)}
        rows = []
        for gw in known:
            d = self.devices.get(gw)
            if d is not None:
                rows.append(d.status(now))
            else:
                entry = next(u for u in self.config.uitds if u.gateway == gw)
                rows.append({"address": f"0x{entry.address:012x}", "gateway": gw,
                             "site": entry.site, "profile": entry.profile.name,
                             "connected": False, "online": False, "link_fault": False,
                             "peer": "", "silent_s": None, "next_seq": None, "queued": 0,
                             "counters": {}, "commands": []})
        return {"collector": self.collector_id, "listen": self.config.listen,
                "port": self.port, "connections": len(self.links),
                "updated_ms": _ms(), "running": self._running,
                "counters": dict(self.counters), "uitds": rows}

    def _write_state(self, now: float, final: bool = False) -> None:
        self._last_state = now
        if self.state_dir is None:
            return
        body = self.status()
        if final:
            body["running"] = False
        path = self.state_dir / STATE_FILE
        if final or self.loop is None:
            self._save(path, body)
        else:  # 10,000 UITDs make a few MB of JSON: off the loop that serves the links
            self.loop.run_in_executor(None, self._save, path, body)

    def _save(self, path: Path, body: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
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


def _ms() -> int:
    return time.time_ns() // 1_000_000


def _numbered(records: Sequence[Record]) -> Mapped:
    return Mapped(tuple(records))

