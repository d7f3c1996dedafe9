"""Transports for the simulated UITD: a new pty, an existing serial port, TCP either way.

Each transport hands out :class:`Connection` objects, one at a time:

* :class:`PtyTransport` creates a pseudo-terminal with :func:`os.openpty`. The simulator keeps the
  master side; the agent opens the slave device (``/dev/pts/N``, printed by the CLI, optionally
  behind a stable symlink) exactly like a USB serial adapter. The simulator also keeps a descriptor
  of the slave open, so the agent can close and reopen the port without the master seeing EIO.
  As with socat, bytes written while nobody reads stay queued for the next open: an agent
  should reset its input buffer when it opens the port.
* :class:`SerialTransport` opens a real port with pyserial (imported lazily): a bench test
  against the agent on another machine, through a null-modem cable or an RS-485 pair.
* :class:`TcpListenTransport`: the agent connects, as to a networked panel gateway. A new
  connection replaces the current one (a centre that restarts must not wait for a dead socket).
* :class:`TcpConnectTransport`: the UITD dials the centre, as UITDs do in the field, and dials
  again (with a growing back-off) whenever the connection cannot be made or drops.

:class:`Pacer` paces writes at a baud rate: a pty delivers any amount at once, a 9600-baud line
carries 960 characters per second (8N1: 10 bits each). Bytes are released in small chunks, each
no earlier than the moment its last bit would have left a real UART, so a frame never arrives
sooner than it could on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol


class Connection(Protocol):
    """One link to the centre."""

    name: str

    async def read(self) -> bytes:
        """The next bytes received; ``b""`` when the link closed."""
        ...

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` (waits while the peer is not reading)."""
        ...

    def close(self) -> None:
        """Close this connection (the transport may offer another)."""
        ...


class Transport(Protocol):
    """Where connections come from."""

    address: str
    kind: str

    async def start(self) -> None:
        """Open the port or socket (errors surface here, before anything runs)."""
        ...

    def connections(self) -> AsyncIterator[Connection]:
        """Connections, one after the other, until :meth:`stop`."""
        ...

    async def stop(self) -> None:
        ...


class Pacer:
    """Writes no faster than a UART at ``baud`` (``bits_per_char`` bits per byte)."""

    def __init__(self, baud: int | None, *, bits_per_char: int = 10,
                 chunk_seconds: float = 0.004) -> None:
        if baud is not None and baud <= 0:
            raise ValueError("baud must be > 0")
        self.baud = baud
        self.byte_time = bits_per_char / baud if baud else 0.0
        self.chunk = max(1, round(chunk_seconds / self.byte_time)) if baud else 0
        self._busy_until = 0.0

    def wire_time(self, nbytes: int) -> float:
        """Seconds ``nbytes`` take on the line."""
        return nbytes * self.byte_time

    async def send(self, conn: Connection, data: bytes) -> None:
        if not self.baud:
            await conn.write(data)
            return
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._busy_until)
        self._busy_until = start + len(data) * self.byte_time
        for offset in range(0, len(data), self.chunk):
            piece = data[offset:offset + self.chunk]
            delay = start + (offset + len(piece)) * self.byte_time - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await conn.write(piece)


class FdConnection:
    """A pty master or serial port descriptor, non-blocking, in the running loop."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self._loop = asyncio.get_running_loop()
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO with no slave open cannot happen (we hold one); never spin
            data = b""
        if not data:
            self._loop.remove_reader(self.fd)
        self._incoming.put_nowait(data)

    async def read(self) -> bytes:
        if self._closed:
            return b""
        return await self._incoming.get()

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._closed:
            try:
                view = view[os.write(self.fd, view):]
            except (BlockingIOError, InterruptedError):
                ready = self._loop.create_future()
                self._loop.add_writer(self.fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    self._loop.remove_writer(self.fd)

    def close(self) -> None:
        """Stop reading (the descriptor belongs to the transport)."""
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self.fd)
            self._incoming.put_nowait(b"")


class StreamConnection:
    """A TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        peer = writer.get_extra_info("peername")
        self.name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    async def read(self) -> bytes:
        try:
            return await self.reader.read(4096)
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(data)
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


class PtyTransport:
    """A new pseudo-terminal; the agent opens :attr:`address` (or the ``link`` symlink)."""

    kind = "pty"

    def __init__(self, link: str | Path | None = None) -> None:
        self.link = Path(link) if link is not None else None
        self.address = ""
        self._fds: list[int] = []
        self._conn: FdConnection | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        master, slave = os.openpty()
        self._fds = [master, slave]
        tty.setraw(slave)  # no echo, no line editing, no CR/LF translation
        self.address = os.ttyname(slave)
        if self.link is not None:
            try:
                if self.link.is_symlink():  # a stale link from an earlier run; never a file
                    self.link.unlink()
                self.link.symlink_to(self.address)  # FileExistsError (an OSError) otherwise
            except OSError:
                self.link = None
                await self.stop()
                raise

    async def connections(self) -> AsyncIterator[Connection]:
        self._conn = FdConnection(self._fds[0], self.address)
        try:
            yield self._conn
            await self._stopped.wait()
        finally:
            self._conn.close()

    async def stop(self) -> None:
        self._stopped.set()
        if self._conn is not None:  # stop reading before the descriptor goes
            self._conn.close()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()


class SerialTransport:
    """An existing serial port, opened with pyserial at ``baud``, 8N1."""

    kind = "serial"

    def __init__(self, port: str, baud: int) -> None:
        self.address = port
        self.baud = baud
        self._serial: Any = None
        self._conn: FdConnection | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        import serial  # lazily: only this transport needs pyserial

        try:
            self._serial = serial.Serial(self.address, baudrate=self.baud, timeout=0)
        except serial.SerialException as exc:
            raise OSError(str(exc)) from None
        self._serial.reset_input_buffer()

    async def connections(self) -> AsyncIterator[Connection]:
        self._conn = FdConnection(self._serial.fileno(), self.address)
        try:
            yield self._conn
            await self._stopped.wait()
        finally:
            self._conn.close()

    async def stop(self) -> None:
        self._stopped.set()
        if self._conn is not None:  # stop reading before the descriptor goes
            self._conn.close()
        if self._serial is not None:
            self._serial.close()
            self._serial = None


class TcpListenTransport:
    """Listen on ``host:port`` (port 0: any free one, see :attr:`address`)."""

    kind = "tcp"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.address = f"{host}:{port}"
        self._server: asyncio.Server | None = None
        self._incoming: asyncio.Queue[StreamConnection | None] = asyncio.Queue()
        self._current: StreamConnection | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        sock = self._server.sockets[0].getsockname()
        self.address = f"{sock[0]}:{sock[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._current is not None:  # the newest centre connection wins
            self._current.close()
        self._current = StreamConnection(reader, writer)
        await self._incoming.put(self._current)

    async def connections(self) -> AsyncIterator[Connection]:
        while True:
            conn = await self._incoming.get()
            if conn is None:
                return
            try:
                yield conn
            finally:
                conn.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            if self._current is not None:
                self._current.close()
            await self._server.wait_closed()
            self._server = None
        await self._incoming.put(None)


class TcpConnectTransport:
    """Dial ``host:port``, and dial again after a failure or a drop (1 s, doubling to 10 s)."""

    kind = "tcp-connect"

    def __init__(self, host: str, port: int, *, first_delay: float = 1.0,
                 max_delay: float = 10.0) -> None:
        self.host, self.port = host, port
        self.address = f"{host}:{port}"
        self.first_delay, self.max_delay = first_delay, max_delay
        self.attempts = 0
        self._stopped = False

    async def start(self) -> None:
        """Nothing to open: the first dial happens in :meth:`connections`."""

    async def connections(self) -> AsyncIterator[Connection]:
        delay = self.first_delay
        while not self._stopped:
            self.attempts += 1
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
                continue
            delay = self.first_delay
            conn = StreamConnection(reader, writer)
            try:
                yield conn
            finally:
                conn.close()
            if not self._stopped:
                await asyncio.sleep(self.first_delay)

    async def stop(self) -> None:
        self._stopped = True
