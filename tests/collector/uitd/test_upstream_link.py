"""The forwarder's link to a higher centre (collector/uitd/upstream.py) against a small centre
made of the protocols/gb26875 codec on a real TCP socket (upstream_centre.py): confirmed
uploads leave the queue, an unconfirmed one is resent with the same bytes (§6.5.5), a deny is
resent, an outage and a silent link are survived by reconnecting, an idle link is patrolled."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest

from collector.metrics import Metrics
from collector.uitd.config import UpstreamConfig
from collector.uitd.upstream import Forwarding
from collector.uitd.upstream_queue import Offer
from protocols.gb26875 import (
    ApplicationData,
    CheckPost,
    ClockSync,
    Command,
    ComponentAddress,
    ComponentRef,
    ComponentStatus,
    Frame,
    Reserved,
    Session,
    StreamDecoder,
    TimeLabel,
    UitdStatus,
    address_from_int,
    address_to_int,
    decode_adu,
)
from protocols.wire import Bus, Event, EventType, Source
from tests.collector.conftest import WAIT, wait_until

from .upstream_centre import MiniCentre

T0 = 1_765_000_000_000


def _config(port: int, **over: object) -> UpstreamConfig:
    base = UpstreamConfig(name="province", host="127.0.0.1", port=port,
                          uitd_address=0x0000000A0001, timeout_s=0.3, retries=2,
                          reconnect_min_s=0.05, reconnect_max_s=0.2, keepalive_s=60.0)
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def _alarms(first: int, n: int) -> list[Offer]:
    out = []
    for seq in range(first, first + n):
        src = Source(f"panel/1-1/42-0x{seq:08x}", Bus.GB26875, system_type=1,
                     system_address=1, component_type=42, component_address=seq,
                     description=f"{seq}号感烟")
        out.append(Offer("gw-1", 1, "site-1", Event(source=src, type=EventType.FIRE_ALARM,
                                                    receive_ms=T0, seq=seq)))
    return out


@pytest.fixture
def centre() -> Iterator[MiniCentre]:
    c = MiniCentre().start()
    yield c
    c.stop()


def _forwarding(tmp: Path, cfg: UpstreamConfig, metrics: Metrics | None = None) -> Forwarding:
    return Forwarding(tmp, [cfg], metrics, tz=UTC).start()


def _descriptions(frames: list[object]) -> set[str]:
    out = set()
    for f in frames:
        adu = decode_adu(f.adu)  # type: ignore[attr-defined]
        obj = adu.objects[0]  # type: ignore[union-attr]
        assert isinstance(obj, ComponentStatus)
        out.add(obj.description)
    return out


def test_uploads_are_confirmed_and_leave_the_queue(tmp_path: Path, centre: MiniCentre) -> None:
    metrics = Metrics()
    fwd = _forwarding(tmp_path, _config(centre.port), metrics)
    try:
        assert fwd.offer(_alarms(1, 20)) == 20
        wait_until(lambda: len(centre.uploads(2)) == 20, "20 confirmed uploads")
        wait_until(lambda: fwd.queue.pending("province") == 0, "an empty queue")
        frames = centre.uploads(2)
        assert _descriptions(list(frames)) == {f"{n}号感烟" for n in range(1, 21)}
        assert len({f.serial for f in frames}) == 20  # each its own serial (表1)
        assert {address_to_int(f.source) for f in frames} == {0x0A0001}
        status = fwd.status(T0)[0]
        assert status["connected"] is True and status["queue_depth"] == 0
        assert status["sent"] == 20 and status["confirmed"] == 20
        assert status["oldest_unconfirmed_age_s"] is None
        assert metrics.upstream_uploads.value("province", "confirmed") == 20
        assert "firegate_collector_upstream_connected" in metrics.render()
    finally:
        fwd.close()


def test_an_unconfirmed_upload_is_resent_with_the_same_bytes(tmp_path: Path,
                                                             centre: MiniCentre) -> None:
    centre.withhold = 1
    centre.deny = 1
    fwd = _forwarding(tmp_path, _config(centre.port))
    try:
        fwd.offer(_alarms(1, 1))
        wait_until(lambda: len(centre.uploads(2)) == 1, "the upload confirmed at last")
        seen = centre.uploads(2, confirmed=False)
        assert len(seen) == 3  # withheld, denied, confirmed: the same packet three times
        assert len({(f.serial, f.adu) for f in seen}) == 1  # same serial, same bytes (§6.5)
        wait_until(lambda: fwd.queue.pending("province") == 0, "an empty queue")
        assert fwd.status(T0)[0]["resent"] == 2
    finally:
        fwd.close()


def test_an_outage_keeps_everything_queued_until_the_centre_is_back(tmp_path: Path) -> None:
    centre = MiniCentre()  # not listening yet: the centre is down
    metrics = Metrics()
    fwd = _forwarding(tmp_path, _config(centre.port), metrics)
    try:
        fwd.offer(_alarms(1, 5))
        wait_until(lambda: fwd.status(T0)[0]["last_error"] is not None, "a failed connect")
        status = fwd.status(T0 + 5000)[0]
        assert status["connected"] is False and status["queue_depth"] == 5
        assert status["oldest_unconfirmed_age_s"] is not None
        assert metrics.upstream_connected.value("province") == 0
        wait_until(lambda: metrics.upstream_oldest_seconds.value("province") > 0,
                   "the oldest upload's age in the metrics")
        assert metrics.upstream_queue_depth.value("province") == 5
        fwd.offer(_alarms(6, 5))
        centre.start()
        wait_until(lambda: len(centre.uploads(2)) == 10, "all ten after the outage")
        wait_until(lambda: fwd.queue.pending("province") == 0, "an empty queue")
        wait_until(lambda: metrics.upstream_queue_depth.value("province") == 0,
                   "the depth gauge back to 0")
        assert metrics.upstream_connected.value("province") == 1
    finally:
        fwd.close()
        centre.stop()


def test_a_silent_link_is_reconnected(tmp_path: Path, centre: MiniCentre) -> None:
    centre.black_hole = True
    fwd = _forwarding(tmp_path, _config(centre.port))
    try:
        fwd.offer(_alarms(1, 2))
        wait_until(lambda: centre.connections >= 2, "a reconnect after the resends ran out")
        assert fwd.queue.pending("province") == 2  # nothing confirmed, nothing lost
        centre.black_hole = False
        wait_until(lambda: len(centre.uploads(2)) == 2, "both confirmed on a new link")
        wait_until(lambda: fwd.queue.pending("province") == 0, "an empty queue")
    finally:
        fwd.close()


def test_an_idle_link_is_patrolled(tmp_path: Path, centre: MiniCentre) -> None:
    fwd = _forwarding(tmp_path, _config(centre.port, keepalive_s=1.0))
    try:
        wait_until(lambda: len(centre.uploads(21)) >= 2, "two UITD state patrols (type 21)")
        assert fwd.status(T0)[0]["sent"] == 0  # patrols are not queued uploads
    finally:
        fwd.close()


def test_the_queue_survives_a_restart_of_the_forwarder(tmp_path: Path) -> None:
    centre = MiniCentre()
    fwd = _forwarding(tmp_path, _config(centre.port))
    fwd.offer(_alarms(1, 3))
    fwd.close()
    centre.start()
    fwd = _forwarding(tmp_path, _config(centre.port))
    try:
        wait_until(lambda: len(centre.uploads(2)) == 3, "what the first one queued")
    finally:
        fwd.close()
        centre.stop()


def test_the_centres_own_packets_are_answered(tmp_path: Path) -> None:
    """A higher centre reads our state (81), syncs our clock (90), checks the post (91), asks
    a read we cannot answer (62) and sends garbage: each gets its answer (图2, 图4), the
    garbage is counted, and the link stays up."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    fwd = _forwarding(tmp_path, _config(port))
    try:
        srv.settimeout(WAIT)
        conn, _ = srv.accept()
        conn.settimeout(WAIT)
        centre = Session(bytes(6), address_from_int(0x0A0001))
        label = TimeLabel(5, 4, 3, 2, 1, 26)
        asks = [centre.send(Command.REQUEST, ApplicationData(81, (Reserved(),)), 0.0),
                centre.send(Command.CONTROL, ApplicationData(90, (ClockSync(label),)), 0.0),
                centre.send(Command.CONTROL, ApplicationData(91, (CheckPost(10),)), 0.0),
                centre.send(Command.REQUEST, ApplicationData(
                    62, (ComponentRef(1, 1, ComponentAddress.from_int(5)),)), 0.0)]
        conn.sendall(b"\x00garbage\xff" + b"".join(asks))
        decoder = StreamDecoder()
        by_serial: dict[int, Frame] = {}
        while not set(range(4)) <= set(by_serial):
            data = conn.recv(65536)
            assert data, "the link closed"
            by_serial.update((f.serial, f) for f in decoder.feed(data) if isinstance(f, Frame))
        assert [by_serial[s].command for s in range(4)] == [
            Command.RESPONSE, Command.CONFIRM, Command.CONFIRM, Command.DENY]
        state = decode_adu(by_serial[0].adu)
        assert isinstance(state, ApplicationData) and state.type_mark == 21  # 图13
        assert isinstance(state.objects[0], UitdStatus) and int(state.objects[0].state) == 1
        stats = fwd.forwarders[0].stats
        wait_until(lambda: sum(n for k, n in stats.items() if k.startswith("decode_")) >= 1,
                   "the garbage counted")
        assert fwd.forwarders[0].stats["control_91"] == 1
        assert fwd.status(T0)[0]["connected"] is True
        conn.close()
    finally:
        fwd.close()
        srv.close()
