"""The monitoring centre side for the panel simulator's tests, built from the codec only.

:class:`Centre` is what the edge agent will be: a :class:`StreamDecoder` and a :class:`Session`
on the centre's side of the link. It confirms uploads (or withholds or denies them, per a policy
the test sets), denies frames that fail their check, sends requests and controls, and records
every frame it received with its arrival time. It talks over a real pty opened with pyserial
(:func:`pty_centre`), over TCP (:func:`tcp_centre`), or in memory to the sans-I/O engine
(:class:`MemoryLink`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import serial

from protocols.gb26875 import (
    STANDARD,
    ApplicationData,
    Command,
    DecodeError,
    Frame,
    Incoming,
    InfoObject,
    Profile,
    Session,
    StreamDecoder,
    TimeLabel,
    address_from_int,
    decode_adu,
)
from simulators.panel import PanelSpec, UitdEngine
from simulators.panel.faults import Transmission

START = datetime(2024, 5, 1, 8, 0, 0)  # the panel clock at scenario time 0 in these tests
WAIT = 10.0  # generous bound for anything to arrive on a loaded machine; never a timing assertion

Answer = Literal["confirm", "deny", "ignore"]


def centre_clock() -> TimeLabel:
    return TimeLabel(0, 0, 12, 1, 6, 24)  # the centre's own time: 2024-06-01 12:00:00


class Centre:
    """A GB/T 26875.3 monitoring centre on the codec. ``send`` writes bytes to the UITD."""

    def __init__(self, send: Callable[[bytes], None], profile: Profile = STANDARD,
                 uitd_address: int = 0x0379, centre_address: int = 0) -> None:
        order = profile.address_byte_order
        self.send = send
        self.profile = profile
        self.session = Session(address_from_int(centre_address, order),
                               address_from_int(uitd_address, order), profile,
                               clock=centre_clock)
        self.decoder = StreamDecoder(profile)
        self.frames: list[tuple[float, Frame]] = []  # everything, with loop arrival time
        self.uploads: list[Frame] = []  # command 2 frames, retransmissions left out
        self.replies: dict[int, list[Frame]] = {}  # answers (3/5/6) to our packets, by serial
        self.errors: list[DecodeError] = []
        self.arrivals: Counter[tuple[int, bytes]] = Counter()
        # Decides per upload arrival (n = 1 for the first transmission): confirm, deny, ignore.
        self.policy: Callable[[Frame, int], Answer] = lambda frame, n: "confirm"
        self.first_byte_at: float | None = None
        self.name = ""  # our end of a TCP connection, HOST:PORT
        self._changed = asyncio.Event()

    # -- receiving ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        now = time.monotonic()  # the clock asyncio's loop uses too
        if data and self.first_byte_at is None:
            self.first_byte_at = now
        for item in self.decoder.feed(data):
            if isinstance(item, DecodeError):
                self.errors.append(item)
                deny = self.session.deny_damaged(item)  # §6.5.3: a damaged frame is denied
                if deny is not None:
                    self.send(deny)
                continue
            self.frames.append((now, item))
            if item.command in (Command.CONFIRM, Command.RESPONSE, Command.DENY):
                self.replies.setdefault(item.serial, []).append(item)
            for event in self.session.receive(item, now):
                if isinstance(event, Incoming):
                    self._incoming(event.frame, event.duplicate)
        self._changed.set()

    def _incoming(self, frame: Frame, duplicate: bool) -> None:
        if frame.command != Command.SEND_DATA:
            ack = self.session.acknowledge(frame)  # a dialect's keep-alive
            self.send(ack if ack is not None else self.session.deny(frame))
            return
        key = (frame.serial, frame.adu)
        self.arrivals[key] += 1
        if not duplicate:
            self.uploads.append(frame)
        answer = self.policy(frame, self.arrivals[key])
        if answer == "confirm":
            ack = self.session.acknowledge(frame)
            assert ack is not None
            self.send(ack)
        elif answer == "deny":
            self.send(self.session.deny(frame))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait until ``predicate()`` holds (checked after every received chunk)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def upload(self, n: int = 1, timeout: float = WAIT) -> Frame:
        """The n-th distinct upload (1-based), waiting for it."""
        await self.wait_for(lambda: len(self.uploads) >= n, timeout)
        return self.uploads[n - 1]

    def transmissions(self, serial: int) -> list[Frame]:
        """Every command 2 frame received under ``serial`` (first sending and resends)."""
        return [f for _, f in self.frames if f.command == Command.SEND_DATA and f.serial == serial]

    # -- sending -----------------------------------------------------------------------------

    def packet(self, command: int, type_mark: int, objects: Sequence[InfoObject]) -> bytes:
        """A new request or control (the centre numbers its own packets, 表1)."""
        return self.session.send(command, ApplicationData(type_mark, tuple(objects)),
                                 time.monotonic())

    async def request(self, command: int, type_mark: int, objects: Sequence[InfoObject],
                      timeout: float = WAIT) -> Frame:
        """Send a request or control and return the UITD's first answer (3, 5 or 6)."""
        raw = self.packet(command, type_mark, objects)
        serial = raw[2] | raw[3] << 8
        self.send(raw)
        await self.wait_for(lambda: bool(self.replies.get(serial)), timeout)
        return self.replies[serial][0]

    async def read(self, type_mark: int, *objects: InfoObject) -> ApplicationData:
        """A read (command 4) answered with command 5; its decoded ADU."""
        reply = await self.request(Command.REQUEST, type_mark, objects)
        assert reply.command == Command.RESPONSE, f"answer was command {reply.command}"
        adu = decode_adu(reply.adu, self.profile)
        assert isinstance(adu, ApplicationData)
        return adu


def decoded(frame: Frame, profile: Profile = STANDARD) -> ApplicationData:
    adu = decode_adu(frame.adu, profile)
    assert isinstance(adu, ApplicationData), adu
    return adu


# -- links ------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def pty_centre(path: str, baud: int = 9600, **kw: Any) -> AsyncIterator[Centre]:
    """A centre on the serial device ``path``, opened with pyserial as the agent will."""
    port = serial.Serial(path, baudrate=baud, timeout=0)
    port.reset_input_buffer()
    fd = port.fileno()
    loop = asyncio.get_running_loop()

    def send(data: bytes) -> None:
        port.write(data)

    centre = Centre(send, **kw)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        centre.feed(data)

    loop.add_reader(fd, readable)
    try:
        yield centre
    finally:
        loop.remove_reader(fd)
        port.close()


@contextlib.asynccontextmanager
async def tcp_centre(address: str, **kw: Any) -> AsyncIterator[Centre]:
    """A centre that connects to a UITD listening on ``HOST:PORT``."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    async with stream_centre(reader, writer, **kw) as centre:
        yield centre


@contextlib.asynccontextmanager
async def stream_centre(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        **kw: Any) -> AsyncIterator[Centre]:
    """A centre on an open TCP connection."""
    centre = Centre(writer.write, **kw)
    host, port = writer.get_extra_info("sockname")[:2]
    centre.name = f"{host}:{port}"

    async def pump() -> None:
        while data := await reader.read(4096):
            centre.feed(data)

    task = asyncio.create_task(pump())
    try:
        yield centre
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class MemoryLink:
    """The sans-I/O engine and a centre joined in memory, on a manual scenario time."""

    def __init__(self, config: PanelSpec, *, connect: bool = True, **kw: Any) -> None:
        self.engine = UitdEngine(config, start=START)
        self.now = 0.0
        self._to_engine: list[bytes] = []
        cfg = self.engine.config
        self.centre = Centre(self._to_engine.append, cfg.profile, cfg.uitd_address,
                             cfg.centre_address, **kw)
        self.written: list[Transmission] = []
        if connect:
            self._deliver(self.engine.connect(0.0))

    def _deliver(self, txs: list[Transmission]) -> None:
        """Carry transmissions to the centre and the centre's answers back, until quiet."""
        while txs or self._to_engine:
            for tx in txs:
                self.written.append(tx)
                self.centre.feed(tx.data)
            txs = []
            while self._to_engine:
                txs += self.engine.receive(self._to_engine.pop(0), self.now)

    def advance(self, seconds: float) -> None:
        """Move time on, polling the engine at every deadline on the way."""
        end = self.now + seconds
        while True:
            deadline = self.engine.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self._deliver(self.engine.poll(self.now))
        self.now = end
        self._deliver(self.engine.poll(self.now))

    def send(self, raw: bytes) -> None:
        """Bytes from the centre to the engine (answers flow back)."""
        self._deliver(self.engine.receive(raw, self.now))

    def request(self, command: int, type_mark: int, *objects: InfoObject) -> list[Frame]:
        """Send a packet from the centre; the UITD's answers to it."""
        raw = self.centre.session.send(command, ApplicationData(type_mark, tuple(objects)),
                                       self.now)
        serial = raw[2] | raw[3] << 8
        self.send(raw)
        return self.centre.replies.get(serial, [])

    def read(self, type_mark: int, *objects: InfoObject) -> ApplicationData:
        replies = self.request(Command.REQUEST, type_mark, *objects)
        assert replies and replies[0].command == Command.RESPONSE, replies
        return decoded(replies[0], self.engine.profile)

    def trigger(self, action: str, **params: Any) -> None:
        from simulators.panel.scenario import build_event

        event = build_event(self.engine.config, {"at": self.now, "action": action, **params},
                            "test")
        self._deliver(self.engine.trigger(event, self.now))
