"""A small upper monitoring centre for the upstream tests: the protocols/gb26875 codec on a
real TCP socket (loopback, free port). It confirms uploads, or withholds, denies or ignores
them on demand, and can go down and come back on the same port."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from protocols.gb26875 import (
    Command,
    DecodeError,
    Frame,
    Session,
    StreamDecoder,
    address_from_int,
)
from tests.infra.ports import free_port


@dataclass
class Received:
    frame: Frame
    confirmed: bool


@dataclass
class MiniCentre:
    """Listens on ``port``; one connection at a time (a UITD has one link)."""

    port: int = field(default_factory=free_port)
    address: int = 0
    withhold: int = 0
    """Uploads to leave unanswered (the UITD must resend them)."""
    deny: int = 0
    """Uploads to deny (command 6)."""
    black_hole: bool = False
    """Take the bytes, never answer (a silent link)."""
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket | None = None
    _conn: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> MiniCentre:
        self._stop.clear()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(4)
        s.settimeout(0.1)
        self._listener = s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down: the listener and the connection closed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for s in (self._conn, self._listener):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self._conn = self._listener = None

    def uploads(self, type_mark: int | None = None, confirmed: bool = True) -> list[Frame]:
        with self.lock:
            return [r.frame for r in self.received
                    if (r.confirmed or not confirmed)
                    and (type_mark is None or r.frame.type_mark == type_mark)]

    def _run(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._conn = conn
            try:
                self._serve(conn)
            except OSError:
                pass
            finally:
                conn.close()
                self._conn = None

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        me = address_from_int(self.address)
        session = Session(me, bytes(6))
        decoder = StreamDecoder()
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            for item in decoder.feed(data):
                if isinstance(item, DecodeError) or item.command != Command.SEND_DATA:
                    continue
                self._upload(conn, session, item)

    def _upload(self, conn: socket.socket, session: Session, frame: Frame) -> None:
        with self.lock:
            if self.black_hole or self.withhold > 0:
                self.withhold -= 0 if self.black_hole else 1
                self.received.append(Received(frame, False))
                return
            if self.deny > 0:
                self.deny -= 1
                self.received.append(Received(frame, False))
                conn.sendall(session.deny(frame))
                return
            self.received.append(Received(frame, True))
        conn.sendall(session.confirm(frame))
