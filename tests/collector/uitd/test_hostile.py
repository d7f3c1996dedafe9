"""The centre against an attacker on its network and a careless installer, with real parts (a
real collector, real TCP): a peer claiming a connected UITD's address again and again, one host
opening many links, and links that never name themselves (half-open, slowloris)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.collector.conftest import wait_until
from tests.infra.mosquitto import Mosquitto

from .fake_uitd import FakeUitd, fire_alarm
from .helpers import ADDRESS, centre, confirm_for, events


def _connected(port: int) -> FakeUitd:
    uitd = FakeUitd(port, ADDRESS)
    uitd.keepalive()
    assert uitd.next_frame() is not None, "the keep-alive was not answered"
    return uitd


def test_a_replacement_storm_is_refused_and_raises_an_address_conflict(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    with centre(tmp_path, mosquitto, max_replacements=2) as (_, ctr, _):
        port = ctr.port or 0
        real = _connected(port)
        spoof = _connected(port)  # replacement 1: the real UITD is pushed off
        assert real.wait_closed()
        real2 = _connected(port)  # it reconnects: replacement 2
        assert spoof.wait_closed()
        spoof2 = FakeUitd(port, ADDRESS)  # the third claim within the window: refused
        spoof2.keepalive()
        assert spoof2.wait_closed()
        assert ctr.counters["refused_replace_storm"] == 1
        assert ctr.counters["replaced"] == 2
        # The held link was kept: it still uploads and is confirmed.
        raw = real2.upload(fire_alarm())
        assert confirm_for(real2, raw)
        wait_until(lambda: any(e.get("source") == "gb26875/uitd/address_conflict"
                               and e.get("active") is True
                               for e in events(store, "link_fault")),
                   "an address_conflict link fault stored")
        assert ctr.counters["address_conflicts"] == 1
        spoof3 = FakeUitd(port, ADDRESS)  # refused again, no second alarm
        spoof3.keepalive()
        assert spoof3.wait_closed()
        assert ctr.counters["refused_replace_storm"] == 2
        assert ctr.counters["address_conflicts"] == 1
        status = ctr.status()
        assert status["uitds"][0]["address_conflict"] is True
        for u in (real, spoof, real2, spoof2, spoof3):
            u.close()


def test_one_host_cannot_take_every_connection_slot(mosquitto: Mosquitto,
                                                    tmp_path: Path) -> None:
    with centre(tmp_path, mosquitto, max_connections_per_ip=2) as (_, ctr, _):
        port = ctr.port or 0
        hogs = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        wait_until(lambda: len(ctr.links) == 2, "two links")
        third = FakeUitd(port, ADDRESS)
        assert third.wait_closed()
        assert ctr.counters["refused_per_ip"] == 1
        hogs.pop().close()
        wait_until(lambda: len(ctr.links) == 1, "a slot free again")
        uitd = _connected(port)  # a slot freed is a slot usable
        raw = uitd.upload(fire_alarm())
        assert confirm_for(uitd, raw)
        for s in hogs:
            s.close()
        third.close()
        uitd.close()


def test_a_link_that_never_names_itself_is_closed_early(mosquitto: Mosquitto,
                                                        tmp_path: Path) -> None:
    with centre(tmp_path, mosquitto, identify_timeout_s=1.0,
                silence_timeout_s=600.0) as (_, ctr, _):
        port = ctr.port or 0
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        # A slowloris: a frame's start marker and a byte at a time, never a whole frame.
        sock.sendall(b"@@")
        closed = False
        deadline = time.monotonic() + 30
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"\x01")
                sock.settimeout(0.2)
                closed = sock.recv(64) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed, "the unidentified link was held open"
        assert ctr.counters["closed_unidentified"] == 1
        uitd = _connected(port)  # a UITD that names itself is not affected
        (link,) = ctr.links
        wait_until(lambda: time.monotonic() - link.opened > 2.5, "past the identify timeout")
        uitd.keepalive()
        assert uitd.next_frame() is not None and not link.closed
        uitd.close()
        sock.close()
