"""The centre against an attacker on its network and a careless installer, with real parts (a
real collector, real TCP): a peer claiming a connected UITD's address again and again, one host
opening many links, and links that never name themselves (half-open, slowloris)."""

from __future__ import annotations

import socket
import threading
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
    """Links that never name themselves are capped per peer address; identified UITDs from
    the same address (a NAT, a load balancer) are not."""
    with centre(tmp_path, mosquitto, max_unidentified_per_ip=2,
                accept_unknown=True) as (_, ctr, _):
        port = ctr.port or 0
        hogs = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        wait_until(lambda: len(ctr.links) == 2, "two links")
        third = FakeUitd(port, ADDRESS)
        assert third.wait_closed()
        assert ctr.counters["refused_per_ip"] == 1
        hogs.pop().close()
        wait_until(lambda: len(ctr.links) == 1, "a slot free again")
        uitds = []
        for i in range(4):  # one at a time: each names itself before the next connects
            u = FakeUitd(port, ADDRESS + i)
            u.keepalive()
            assert u.next_frame() is not None, f"UITD {i} refused"
            uitds.append(u)
        raw = uitds[0].upload(fire_alarm())
        assert confirm_for(uitds[0], raw)
        assert ctr.counters["refused_per_ip"] == 1
        for s in hogs:
            s.close()
        for u in (third, *uitds):
            u.close()


def test_the_optional_cap_on_every_link_per_address(mosquitto: Mosquitto,
                                                    tmp_path: Path) -> None:
    with centre(tmp_path, mosquitto, max_connections_per_ip=2,
                accept_unknown=True) as (_, ctr, _):
        port = ctr.port or 0
        first, second = _connected(port), FakeUitd(port, ADDRESS + 1)
        second.keepalive()
        assert second.next_frame() is not None
        third = FakeUitd(port, ADDRESS + 2)
        assert third.wait_closed()
        assert ctr.counters["refused_per_ip"] == 1
        for u in (first, second, third):
            u.close()


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


def test_a_user_of_other_sites_reaches_no_uitd_and_sees_no_totals(mosquitto: Mosquitto,
                                                                   tmp_path: Path) -> None:
    from .test_routes import OPERATOR, OUTSIDER, _http, _sections

    with centre(tmp_path, mosquitto, sections=_sections()) as (c, ctr, _):
        assert c.api is not None
        base = c.api.url
        uitd = _connected(ctr.port or 0)
        for name in ("hz-xihu-0042-uitd", f"0x{ADDRESS:012x}", f"0X{ADDRESS:012X}"):
            for verb, body in (("clock-sync", None), ("check-post", b'{"minutes": 5}'),
                               ("read", b'{"what": "uitd"}')):
                status, doc = _http(f"{base}/api/v1/uitds/{name}/{verb}", OUTSIDER, "POST",
                                    body)
                assert status == 404, (name, verb, doc)
        assert uitd.next_frame(timeout=0.5) is None  # nothing reached the UITD
        status, doc = _http(f"{base}/api/v1/uitds", OUTSIDER)
        assert status == 200 and doc["uitds"] == []
        assert doc["counters"] == {} and doc["connections"] == 0
        status, doc = _http(f"{base}/api/v1/uitds", OPERATOR)  # every site: the totals
        assert status == 200 and doc["counters"]["accepted"] == 1 and doc["connections"] == 1
        uitd.close()


def _answer_reads_with(uitd: FakeUitd, description: str, stop: threading.Event) -> None:
    """The UITD's side: a read of components (62) answered with a type 2 status whose
    description is ``description``."""
    from protocols.gb26875 import (
        ApplicationData,
        Command,
        ComponentAddress,
        ComponentState,
        ComponentStatus,
        TimeLabel,
    )
    while not stop.is_set():
        frame = uitd.next_frame(timeout=0.2)
        if frame is None:
            if uitd.eof:
                return
            continue
        if frame.command == Command.REQUEST:
            uitd.send_raw(uitd.session.respond(frame, ApplicationData(2, (ComponentStatus(
                1, 1, 21, ComponentAddress.from_int(7), ComponentState(0x0001), description,
                TimeLabel(0, 30, 10, 6, 12, 26)),))))


def test_hostile_text_in_a_read_answer_reaches_the_cli_visible(mosquitto: Mosquitto,
                                                                tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from firegate.cli.main import app

    from .test_routes import OPERATOR, _sections

    hostile = "东\u202e侧\u2066x\u2069\u2028烟感"
    with centre(tmp_path, mosquitto, sections=_sections()) as (c, ctr, _):
        assert c.api is not None
        token_file = tmp_path / "token"
        token_file.write_text(OPERATOR + "\n")
        token_file.chmod(0o600)
        uitd = _connected(ctr.port or 0)
        stop = threading.Event()
        t = threading.Thread(target=_answer_reads_with, args=(uitd, hostile, stop),
                             daemon=True)
        t.start()
        try:
            args = ["collector", "uitd", "read", "hz-xihu-0042-uitd", "--what", "components",
                    "--target", "1,1,7", "--url", c.api.url, "--token-file", str(token_file)]
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
            for ch in ("\u202e", "\u2066", "\u2069", "\u2028"):
                assert ch not in result.output, f"{ch!r} reached the terminal"
            assert "\\u202e" in result.output and "烟感" in result.output
            result = CliRunner().invoke(app, [*args, "--json"])  # exact in JSON
            assert result.exit_code == 0 and hostile in result.output, result.output
        finally:
            stop.set()
            t.join(5)
            uitd.close()


def test_the_state_file_is_owner_only(mosquitto: Mosquitto, tmp_path: Path) -> None:
    import stat

    with centre(tmp_path, mosquitto) as (c, ctr, _):
        uitd = _connected(ctr.port or 0)
        path = c.config.state_dir / "uitd.json"
        wait_until(path.exists, "uitd.json written")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        uitd.close()
