"""A small GB/T 26875.3 monitoring centre for the UITD fleet's tests, made of the codec only.

It listens on a free loopback port; every UITD that dials in gets a :class:`CentreLink` with
its own :class:`StreamDecoder` and :class:`Session` (opened on the first frame, whose source
address says who it is). Uploads are confirmed, withheld or denied per a policy the test sets;
frames that fail their check are denied (§6.5.3); the test can send reads and controls to any
UITD and await the answer. Nothing here comes from the collector (C's centre): the fleet is
held against an independent reading of the standard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Literal

from protocols.gb26875 import (
    PROFILES,
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
    decode_adu,
)

WAIT = 20.0  # generous bound for a loaded machine; never a timing assertion
CENTRE = bytes(6)  # the centre's address (all zero, as the fleet's default)

Answer = Literal["confirm", "deny", "ignore"]


def centre_clock() -> TimeLabel:
    return TimeLabel(0, 0, 12, 1, 6, 24)  # 2024-06-01 12:00:00


class CentreLink:
    """One UITD's connection to the centre."""

    def __init__(self, centre: MiniCentre, writer: asyncio.StreamWriter) -> None:
        self.centre = centre
        self.writer = writer
        self.session: Session | None = None
        self.address: bytes | None = None  # the UITD's raw source address
        self.profile: Profile = STANDARD
        self.decoder = StreamDecoder(STANDARD)
        self.frames: list[Frame] = []
        self.uploads: list[Frame] = []  # command 2, retransmissions left out
        self.replies: dict[int, list[Frame]] = {}
        self.arrivals: Counter[tuple[int, bytes]] = Counter()
        self.errors: list[DecodeError] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def feed(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            if isinstance(item, DecodeError):
                self.errors.append(item)
                if self.session is not None and (deny := self.session.deny_damaged(item)):
                    self.send(deny)
                continue
            if self.session is None:
                self._open(item)
            assert self.session is not None
            if self.centre.keep:
                self.frames.append(item)
            if item.command in (Command.CONFIRM, Command.RESPONSE, Command.DENY):
                self.replies.setdefault(item.serial, []).append(item)
            for event in self.session.receive(item, asyncio.get_running_loop().time()):
                if isinstance(event, Incoming):
                    self._incoming(event.frame, event.duplicate)
        self.centre.changed()

    def _open(self, first: Frame) -> None:
        self.address = first.source
        self.profile = self.centre.profile_of(first.source)
        self.decoder.profile = self.profile
        self.session = Session(CENTRE, first.source, self.profile, clock=centre_clock)
        if self.centre.keep:
            self.centre.by_address.setdefault(first.source, []).append(self)

    def _incoming(self, frame: Frame, duplicate: bool) -> None:
        assert self.session is not None
        if frame.command != Command.SEND_DATA:
            ack = self.session.acknowledge(frame)  # a dialect's keep-alive
            self.send(ack if ack is not None else self.session.deny(frame))
            return
        key = (frame.serial, frame.adu)
        if self.centre.keep:
            self.arrivals[key] += 1
            if not duplicate:
                self.uploads.append(frame)
                self.centre.uploads.append((self, frame))
        answer = self.centre.policy(self, frame, self.arrivals[key])
        if answer == "confirm":
            ack = self.session.acknowledge(frame)
            assert ack is not None
            self.send(ack)
        elif answer == "deny":
            self.send(self.session.deny(frame))

    async def request(self, command: int, type_mark: int, objects: Sequence[InfoObject],
                      ) -> Frame:
        """A read or control to this UITD; its first answer (3, 5 or 6)."""
        assert self.session is not None
        raw = self.session.send(command, ApplicationData(type_mark, tuple(objects)),
                                asyncio.get_running_loop().time())
        serial = raw[2] | raw[3] << 8
        self.send(raw)
        await self.centre.wait_for(lambda: bool(self.replies.get(serial)))
        return self.replies[serial][0]

    def decoded(self, frame: Frame) -> ApplicationData:
        adu = decode_adu(frame.adu, self.profile)
        assert isinstance(adu, ApplicationData), adu
        return adu

    def close(self) -> None:
        """Hang up on the UITD (the centre's side closes)."""
        self.writer.close()


class MiniCentre:
    """A listening centre; ``profiles`` maps a raw source address to its dialect. ``keep``:
    record every frame (tests); without it the centre only answers (the benchmark's codec
    centre, whose memory must not grow with the uploads)."""

    def __init__(self, profiles: dict[bytes, str] | None = None, *, keep: bool = True) -> None:
        self.profiles = profiles or {}
        self.keep = keep
        self.links: list[CentreLink] = []
        self.by_address: dict[bytes, list[CentreLink]] = {}
        self.uploads: list[tuple[CentreLink, Frame]] = []
        self.policy: Callable[[CentreLink, Frame, int], Answer] = lambda link, f, n: "confirm"
        self.port = 0
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def profile_of(self, source: bytes) -> Profile:
        return PROFILES[self.profiles.get(source, "standard")]

    def changed(self) -> None:
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def link(self, address: bytes) -> CentreLink:
        """The latest connection of a UITD."""
        return self.by_address[address][-1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = CentreLink(self, writer)
        if self.keep:
            self.links.append(link)
        self.changed()
        try:
            while data := await reader.read(65536):
                link.feed(data)
        except ConnectionError:
            pass
        finally:
            link.closed = True
            writer.close()
            self.changed()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port,
                                                  backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for link in self.links:
                link.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)


@contextlib.asynccontextmanager
async def centre(profiles: dict[bytes, str] | None = None) -> AsyncIterator[MiniCentre]:
    c = MiniCentre(profiles)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()
