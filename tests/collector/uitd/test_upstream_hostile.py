"""The forwarder against a hostile or broken higher centre, on real TCP: a centre that only
sends garbage (at once, or dripped) must not keep the link looking alive."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

from collector.uitd.upstream import MAX_JUNK, Forwarding
from protocols.gb26875 import Frame, StreamDecoder
from tests.collector.conftest import WAIT, wait_until

from .test_upstream_link import _config


class GarbageCentre:
    """Accepts links; on each, sends ``burst`` bytes of garbage at once, then drips a byte of
    garbage every ``drip_s``; records the valid frames the forwarder sends it."""

    def __init__(self, burst: int = 0, drip_s: float = 0.05) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self.burst, self.drip_s = burst, drip_s
        self.connections = 0
        self.frames: list[Frame] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        decoder = StreamDecoder()
        conn.settimeout(self.drip_s)
        with contextlib.suppress(OSError):
            if self.burst:
                conn.sendall(b"\xa5" * self.burst)
            while not self.stop.is_set():
                try:
                    data = conn.recv(4096)
                    if not data:
                        return
                    self.frames += [f for f in decoder.feed(data) if isinstance(f, Frame)]
                except TimeoutError:
                    pass
                conn.sendall(b"\x00")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.srv.close()


@contextlib.contextmanager
def _garbage(**kw: float) -> Iterator[GarbageCentre]:
    c = GarbageCentre(**kw)  # type: ignore[arg-type]
    try:
        yield c
    finally:
        c.close()


def test_dripped_garbage_does_not_stop_the_patrol(tmp_path: Path) -> None:
    with _garbage(drip_s=0.05) as centre:
        fwd = Forwarding(tmp_path, [_config(centre.port, keepalive_s=1.0)], tz=UTC).start()
        try:
            # Garbage is not traffic: the idle link is patrolled, the patrol is never
            # confirmed, and after its resends the link is opened again.
            wait_until(lambda: len(centre.frames) >= 1, "a patrol despite the garbage")
            wait_until(lambda: centre.connections >= 2, "a reconnect: patrol unconfirmed")
            stats = fwd.forwarders[0].stats
            assert stats["patrols"] >= 1 and stats["unconfirmed"] >= 1
        finally:
            fwd.close()


def test_a_burst_of_garbage_breaks_the_link(tmp_path: Path) -> None:
    with _garbage(burst=4 * MAX_JUNK, drip_s=WAIT) as centre:
        fwd = Forwarding(tmp_path, [_config(centre.port, keepalive_s=3600.0)], tz=UTC).start()
        try:
            wait_until(lambda: centre.connections >= 2, "a reconnect after the garbage")
            stats = fwd.forwarders[0].stats
            wait_until(lambda: stats["garbage"] >= 1, "the garbage counted")
            assert stats["unconfirmed"] == 0  # broken by the garbage, not by a timeout
        finally:
            fwd.close()


def test_bidi_overrides_and_separators_are_not_forwarded() -> None:
    """A description from the field with a right-to-left override, an isolate, a zero-width
    joiner and a line separator: none reaches the higher centre's display; GB 18030 text
    (four-byte sequences included) is kept, cut at a character boundary."""
    from protocols.gb26875.fields import DESCRIPTION_LEN, TEXT_ENCODING
    from protocols.upward_records import fit_text

    hostile = "3F\u202e东侧\u2066走廊\u2069\u200d\u2028烟感\U00020000"
    shown = fit_text(hostile, DESCRIPTION_LEN)
    assert shown == "3F东侧走廊烟感\U00020000"
    assert fit_text("\u202e" + "楼" * 40, DESCRIPTION_LEN) == "楼" * 15  # 30 of 31 bytes
    assert len(fit_text("a" + "\U00020000" * 10, DESCRIPTION_LEN).encode(TEXT_ENCODING)) <= 31


def test_confirms_of_serials_never_sent_confirm_nothing(tmp_path: Path) -> None:
    """A centre that confirms serials we never sent (and nothing we did): every upload stays
    queued; the stray confirms are counted ``unmatched``."""
    from protocols.gb26875 import Command, Session, address_from_int

    from .test_upstream_link import _alarms

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    fwd = Forwarding(tmp_path, [_config(port)], tz=UTC).start()
    try:
        fwd.offer(_alarms(1, 3))
        srv.settimeout(WAIT)
        conn, _ = srv.accept()
        with conn:
            liar = Session(bytes(6), address_from_int(0x0A0001))
            stray = b""
            for serial in range(30_000, 30_050):  # far from anything the forwarder uses
                fake = Frame(serial, Command.SEND_DATA, b"", address_from_int(0x0A0001),
                             bytes(6), None, 0x0101)
                stray += liar.confirm(fake)
            conn.sendall(stray)
            stats = fwd.forwarders[0].stats
            wait_until(lambda: stats["unmatched"] >= 50, "the stray confirms counted")
            assert stats["confirmed"] == 0
            assert fwd.queue.pending("province") == 3
    finally:
        fwd.close()
        srv.close()
