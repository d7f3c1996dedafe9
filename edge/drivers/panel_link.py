"""Byte transports to a UITD: a serial port (pyserial), a TCP client, a TCP server.

Each is opened, read, written and closed by the panel driver, and reopened after a loss. A
device that vanishes (a USB adapter pulled, a pty whose other end closed, a peer that hung up)
surfaces as :class:`LinkClosed` from :meth:`PanelLink.read` or :meth:`PanelLink.write`, never
as a crash: the driver turns it into a link fault and reopens with back-off. Opening errors are
:class:`OSError` (pyserial's ``SerialException`` is one).

The serial port is driven non-blocking from the event loop (``add_reader`` / ``add_writer`` on
its descriptor): no thread, and a cancelled read leaves nothing behind. Its input buffer is
reset on open, since a pty or socat pair keeps bytes written while nobody read them (those
uploads are unconfirmed, so the UITD sends them again anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any, Protocol

from edge.config.panel import LinkKind, PanelConfig

__all__ = ["LinkClosed", "PanelLink", "SerialLink", "TcpClientLink", "TcpServerLink", "make_link"]

_CHUNK = 4096


class LinkClosed(Exception):
    """The link is gone. ``fault`` is False when a UITD simply reconnected (TCP server: the
    newest connection replaces the current one), which is not a monitoring-line fault."""

    def __init__(self, message: str, *, fault: bool = True) -> None:
        super().__init__(message)
        self.fault = fault


class PanelLink(Protocol):
    """What the driver needs from a transport."""

    @property
    def description(self) -> str:
        """Where the link goes, for people: ``serial /dev/ttyUSB0 9600 8N1``."""
        ...

    async def open(self) -> None:
        """Open (serial, TCP client) or wait for the UITD to connect (TCP server)."""
        ...

    async def read(self) -> bytes:
        """The next bytes (at least one); :class:`LinkClosed` when the link is gone."""
        ...

    async def write(self, data: bytes) -> None:
        """Write everything; :class:`LinkClosed` when the link is gone."""
        ...

    async def close(self) -> None:
        """Close the current connection (a server keeps listening)."""
        ...

    async def shutdown(self) -> None:
        """Close everything (the driver is stopping)."""
        ...


class SerialLink:
    """A serial device through pyserial (imported here, where it is chosen)."""

    def __init__(self, port: str, baud: int = 9600, bytesize: int = 8, parity: str = "N",
                 stopbits: float = 1.0) -> None:
        self.port, self.baud = port, baud
        self.bytesize, self.parity, self.stopbits = bytesize, parity, stopbits
        self._serial: Any = None
        self._fd = -1

    @property
    def description(self) -> str:
        stop = f"{self.stopbits:g}"
        return f"serial {self.port} {self.baud} {self.bytesize}{self.parity}{stop}"

    async def open(self) -> None:
        import serial

        await self.close()
        # exclusive: a second program on the same line would steal half of the frames.
        port = serial.Serial(self.port, baudrate=self.baud, bytesize=self.bytesize,
                             parity=self.parity, stopbits=self.stopbits, timeout=0,
                             exclusive=True)
        try:
            port.reset_input_buffer()
            self._fd = port.fileno()
            os.set_blocking(self._fd, False)
        except BaseException:
            port.close()
            raise
        self._serial = port

    async def _ready(self, writer: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        add, remove = ((loop.add_writer, loop.remove_writer) if writer
                       else (loop.add_reader, loop.remove_reader))
        add(self._fd, wake)
        try:
            await ready
        finally:
            remove(self._fd)

    async def read(self) -> bytes:
        # Wait for readiness first: pyserial sets VMIN=0, VTIME=0, so a read with no data
        # returns 0 bytes rather than EAGAIN. Readable *and* empty means the device is gone.
        while True:
            if self._serial is None:
                raise LinkClosed("port closed")
            await self._ready(writer=False)
            if self._serial is None:
                raise LinkClosed("port closed")
            try:
                data = os.read(self._fd, _CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:  # EIO: the device (or the pty's other end) went away
                raise LinkClosed(f"{self.port}: {exc.strerror or exc}") from exc
            if not data:
                raise LinkClosed(f"{self.port}: device disconnected")
            return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._serial is None:
                raise LinkClosed("port closed")
            try:
                view = view[os.write(self._fd, view):]
            except (BlockingIOError, InterruptedError):
                await self._ready(writer=True)
            except OSError as exc:
                raise LinkClosed(f"{self.port}: {exc.strerror or exc}") from exc

    async def close(self) -> None:
        port, self._serial, self._fd = self._serial, None, -1
        if port is not None:
            with contextlib.suppress(OSError):
                port.close()

    async def shutdown(self) -> None:
        await self.close()


class _Stream:
    """One TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self) -> bytes:
        try:
            data = await self.reader.read(_CHUNK)
        except OSError as exc:
            raise LinkClosed(f"connection lost: {exc}") from exc
        if not data:
            raise LinkClosed("the UITD closed the connection")
        return data

    async def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise LinkClosed("connection closed")
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError as exc:
            raise LinkClosed(f"connection lost: {exc}") from exc

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class TcpClientLink:
    """Dial a UITD (or a serial-to-Ethernet converter) that listens on ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._conn: _Stream | None = None

    @property
    def description(self) -> str:
        return f"tcp {self.host}:{self.port}"

    async def open(self) -> None:
        await self.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._conn = _Stream(reader, writer)

    async def read(self) -> bytes:
        if self._conn is None:
            raise LinkClosed("not connected")
        return await self._conn.read()

    async def write(self, data: bytes) -> None:
        if self._conn is None:
            raise LinkClosed("not connected")
        await self._conn.write(data)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def shutdown(self) -> None:
        await self.close()


class TcpServerLink:
    """Listen on ``host:port`` for the UITD to dial in, as UITDs do in the field.

    The socket keeps listening between connections. A new connection replaces the current one
    (a UITD that restarted must not wait for its dead socket to time out); the current reader
    then gets a :class:`LinkClosed` with ``fault=False``.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None
        self._waiting: asyncio.Queue[_Stream] = asyncio.Queue()
        self._conn: _Stream | None = None
        self._replaced = False

    @property
    def description(self) -> str:
        return f"tcp listen {self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound address once listening (port 0 in the config: the one chosen)."""
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def listen(self) -> None:
        """Start listening (idempotent); :meth:`open` calls it."""
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
            bound = self.address
            if bound is not None:
                self.port = bound[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = _Stream(reader, writer)
        while not self._waiting.empty():  # only the newest waiting connection is kept
            await self._waiting.get_nowait().close()
        await self._waiting.put(stream)
        if self._conn is not None:
            self._replaced = True
            self._conn.writer.close()  # the reader sees EOF and reports the replacement

    async def open(self) -> None:
        await self.listen()
        await self.close()
        self._conn = await self._waiting.get()
        self._replaced = False

    async def read(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise LinkClosed("no UITD connected")
        try:
            return await conn.read()
        except LinkClosed as exc:
            if self._replaced and conn is self._conn:
                raise LinkClosed("the UITD connected again", fault=False) from exc
            raise

    async def write(self, data: bytes) -> None:
        if self._conn is None:
            raise LinkClosed("no UITD connected")
        await self._conn.write(data)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def shutdown(self) -> None:
        await self.close()
        while not self._waiting.empty():
            await self._waiting.get_nowait().close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def make_link(config: PanelConfig) -> SerialLink | TcpClientLink | TcpServerLink:
    """The transport a ``[[panel]]`` table names."""
    if config.kind is LinkKind.SERIAL:
        assert config.port is not None
        return SerialLink(config.port, config.baud, config.bytesize, config.parity,
                          config.stopbits)
    if config.kind is LinkKind.TCP_CLIENT:
        assert config.connect is not None
        return TcpClientLink(*config.connect)
    assert config.listen is not None
    return TcpServerLink(*config.listen)
