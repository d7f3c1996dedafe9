"""Two pseudo-terminals joined back to back: a serial cable without hardware.

The simulator's RTU server opens :attr:`PtyLink.server_path`, the client (the edge agent, a bench
tool, a test) opens :attr:`PtyLink.client_path`, and an asyncio relay in the simulator's own loop
copies bytes between the two pty masters. Doing the relay here rather than with ``socat`` keeps the
simulator self-contained and lets it pace the line: a pty ignores the baud rate and would deliver a
48-byte frame at once, where a real 9600-baud line takes ~50 ms. With ``baudrate`` set, the relay
delivers each chunk no earlier than the end of its transmission time on a shared half-duplex line
(RS-485: requests and responses share the one pair of wires, 10 bits per 8N1 character).

The relay keeps its own descriptors of both slave sides open so a client that closes and reopens
the port does not make the master return EIO. As with socat, bytes the client has not read when it
closes stay queued for its next open; a client should reset its input buffer on open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from pathlib import Path


class PtyLink:
    """A pair of ptys with an optional baud-rate-paced relay between them."""

    def __init__(self, baudrate: int | None = None, *, bits_per_char: int = 10,
                 link: str | Path | None = None) -> None:
        if baudrate is not None and baudrate <= 0:
            raise ValueError("baudrate must be > 0")
        self.baudrate = baudrate
        self.bits_per_char = bits_per_char
        self.link = Path(link) if link is not None else None
        self._fds: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy_until = 0.0
        self._out: dict[int, bytearray] = {}
        self.server_path = ""
        self.client_path = ""
        self.bytes_relayed = 0

    def open(self) -> None:
        """Create the ptys and start relaying in the running event loop."""
        self._loop = asyncio.get_running_loop()
        master_a, slave_a = os.openpty()
        master_b, slave_b = os.openpty()
        self._fds = [master_a, slave_a, master_b, slave_b]
        for fd in (slave_a, slave_b):
            tty.setraw(fd)  # no echo, no line editing, no CR/LF translation
        for fd in (master_a, master_b):
            os.set_blocking(fd, False)
            self._out[fd] = bytearray()
        self.server_path, self.client_path = os.ttyname(slave_a), os.ttyname(slave_b)
        self._loop.add_reader(master_a, self._readable, master_a, master_b)
        self._loop.add_reader(master_b, self._readable, master_b, master_a)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.client_path)

    def close(self) -> None:
        """Stop relaying, close the ptys and remove the symlink."""
        if self._loop is not None:
            for fd in self._fds[0::2]:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        self._out.clear()
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def __enter__(self) -> PtyLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _readable(self, src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: cannot happen while we hold the slave open, but never spin on it
            return
        if not data or self._loop is None:
            return
        self.bytes_relayed += len(data)
        if not self.baudrate:
            self._deliver(dst, data)
            return
        start = max(self._loop.time(), self._busy_until)
        self._busy_until = start + len(data) * self.bits_per_char / self.baudrate
        self._loop.call_at(self._busy_until, self._deliver, dst, data)

    def _deliver(self, dst: int, data: bytes) -> None:
        if dst not in self._out:  # closed meanwhile
            return
        self._out[dst] += data
        self._flush(dst)

    def _flush(self, dst: int) -> None:
        buf = self._out.get(dst)
        if buf is None or self._loop is None:
            return
        try:
            written = os.write(dst, buf) if buf else 0
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError:
            buf.clear()
            written = 0
        del buf[:written]
        if buf:
            self._loop.add_writer(dst, self._flush, dst)
        else:
            self._loop.remove_writer(dst)
