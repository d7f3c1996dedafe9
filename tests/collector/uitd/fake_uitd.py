"""A UITD for the centre's tests, built from the protocols/gb26875 encoder: a real TCP socket,
real frames, the standard's session rules on its side too."""

from __future__ import annotations

import socket
import time
from collections import deque

from protocols.gb26875 import (
    ApplicationData,
    Command,
    ComponentAddress,
    ComponentState,
    ComponentStatus,
    Frame,
    Session,
    StreamDecoder,
    TimeLabel,
    address_from_int,
    decode_adu,
)
from protocols.gb26875.adu import Adu

WAIT = 30.0


def fire_alarm(address: int = 7, description: str = "3F east corridor", *,
               active: bool = True, second: int = 0) -> ApplicationData:
    """A type 2 upload: one smoke detector (component type 21) in fire alarm (图7 bit 1)."""
    state = ComponentState(0x0003 if active else 0x0001)
    label = TimeLabel(second, 30, 10, 6, 12, 26)
    return ApplicationData(2, (ComponentStatus(1, 1, 21, ComponentAddress.from_int(address),
                                               state, description, label),))


class FakeUitd:
    """One UITD connection to the centre."""

    def __init__(self, port: int, address: int) -> None:
        self.address = address
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.session = Session(address_from_int(address), bytes(6))
        self.decoder = StreamDecoder()
        self.frames: deque[Frame] = deque()
        self.eof = False

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def upload(self, adu: Adu) -> bytes:
        """Send data (command 2); returns the bytes, to resend them unchanged (§6.5.5)."""
        raw = self.session.send(Command.SEND_DATA, adu, time.monotonic())
        self.sock.sendall(raw)
        return raw

    def keepalive(self) -> None:
        """A UITD status upload (type 21, all normal), the usual patrol of a quiet UITD."""
        from protocols.gb26875 import UitdState, UitdStatus
        self.upload(ApplicationData(21, (UitdStatus(UitdState(1), TimeLabel(0, 0, 0, 1, 1, 26)),)))

    def _fill(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return
        for item in self.decoder.feed(data):
            if isinstance(item, Frame):
                self.frames.append(item)

    def next_frame(self, timeout: float = WAIT) -> Frame | None:
        """The next frame from the centre, or None when none came within ``timeout`` or
        the centre closed the connection (``eof``)."""
        deadline = time.monotonic() + timeout
        while not self.frames and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._fill(min(left, 0.2))
        return self.frames.popleft() if self.frames else None

    def wait_closed(self, timeout: float = WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._fill(0.2)
        return self.eof

    def answer_commands(self, frame: Frame) -> list[Adu | None]:
        """Answer a centre's control frame with a confirm (图2)."""
        self.sock.sendall(self.session.confirm(frame))
        return [decode_adu(frame.adu)]
