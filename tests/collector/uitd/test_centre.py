"""The collector as a GB/T 26875.3 monitoring centre, with real parts: a real collector (real
Mosquitto, the embedded SQLite store) listening on a free loopback port, and UITDs built from
the protocols/gb26875 encoder dialling in over real TCP (tests/collector/uitd/fake_uitd.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from collector.uitd.commands import check_post, clock_sync, read, run_command
from protocols.gb26875 import (
    ApplicationData,
    CheckPost,
    ClockSync,
    Command,
    Session,
    TimeLabel,
    UitdOperation,
    UitdOperationRecord,
    address_from_int,
    decode_adu,
)
from tests.collector.conftest import wait_until
from tests.infra.mosquitto import Mosquitto

from .fake_uitd import FakeUitd, fire_alarm
from .helpers import ADDRESS, GATEWAY, SITE, centre, confirm_for, events


def test_fire_alarm_is_stored_before_it_is_confirmed(mosquitto: Mosquitto,
                                                     tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    with centre(tmp_path, mosquitto) as (c, ctr, _):
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        raw = uitd.upload(fire_alarm(description="3F east corridor"))
        assert confirm_for(uitd, raw)
        fires = events(store, "fire_alarm")  # read at the instant of the confirm
        assert len(fires) == 1
        assert fires[0]["gateway"] == GATEWAY and fires[0]["site"] == SITE
        assert fires[0]["active"] is True
        assert fires[0]["description"] == "3F east corridor"
        # Registry: the UITD is a gateway, online.
        wait_until(lambda: c.registry.gateways.get(GATEWAY) is not None and
                   c.registry.gateways[GATEWAY].state == "online", "the UITD online")
        # A restore of the same detector is stored too, under the next seq.
        raw = uitd.upload(fire_alarm(active=False, second=5))
        assert confirm_for(uitd, raw)
        fires = events(store, "fire_alarm")
        assert sorted((f["active"], f["seq"]) for f in fires) == [(False, 2), (True, 1)]
        wait_until(lambda: 'firegate_collector_uitd_events_total{kind="confirmed"} 2'
                   in c.metrics.render(), "the confirms in the collector's /metrics")
        assert "firegate_collector_uitd_links 1\n" in c.metrics.render()
        uitd.close()


def test_store_down_no_confirm_then_the_resend_is_stored_once(mosquitto: Mosquitto,
                                                               tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    with centre(tmp_path, mosquitto) as (_, ctr, sink):
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        uitd.keepalive()
        assert uitd.next_frame() is not None  # the link works
        sink.down = True
        raw = uitd.upload(fire_alarm())
        wait_until(lambda: sink.failed >= 2, "the writer trying the store")
        assert uitd.next_frame(timeout=0.5) is None, "confirmed while the store was down"
        uitd.send_raw(raw)  # the UITD's resend (§6.5.5: same bytes)
        wait_until(lambda: sink.failed >= 4, "more attempts")
        assert uitd.next_frame(timeout=0.5) is None, "a resend confirmed before storing"
        sink.down = False
        assert confirm_for(uitd, raw)
        assert confirm_for(uitd, raw)  # the resend is confirmed as well, and stored once
        assert len(events(store, "fire_alarm")) == 1
        assert ctr.counters["duplicate"] == 1
        uitd.close()


def test_unknown_uitd_is_refused_and_counted(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    with centre(tmp_path, mosquitto) as (_, ctr, _):
        stranger = FakeUitd(ctr.port or 0, 0x0000DEADBEEF)
        stranger.upload(fire_alarm())
        assert stranger.wait_closed(), "the centre kept an unknown UITD"
        assert stranger.next_frame(timeout=0.1) is None
        assert ctr.counters["refused_unknown"] == 1
        assert ctr.counters["closed_unknown_uitd"] == 1
        # The known one is served as before.
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        raw = uitd.upload(fire_alarm())
        assert confirm_for(uitd, raw)
        assert {e["gateway"] for e in events(store)} == {GATEWAY}
        uitd.close()


def test_accept_unknown_takes_any_uitd_under_its_address(mosquitto: Mosquitto,
                                                         tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    with centre(tmp_path, mosquitto, accept_unknown=True) as (_, ctr, _):
        stranger = FakeUitd(ctr.port or 0, 0x0000DEADBEEF)
        raw = stranger.upload(fire_alarm())
        assert confirm_for(stranger, raw)
        assert {e["gateway"] for e in events(store, "fire_alarm")} == {"uitd-0000deadbeef"}
        stranger.close()


def test_silence_is_a_link_fault_and_offline(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    with centre(tmp_path, mosquitto, silence_timeout_s=1.0) as (c, ctr, _):
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        uitd.keepalive()
        assert uitd.next_frame() is not None
        assert uitd.wait_closed(), "a silent link was kept open"
        wait_until(lambda: len(events(store, "link_fault")) == 1, "the link fault stored")
        fault = events(store, "link_fault")[0]
        assert fault["active"] is True and fault["gateway"] == GATEWAY
        wait_until(lambda: c.registry.gateways[GATEWAY].state == "offline", "offline")
        assert ctr.counters["closed_silence"] == 1
        # It dials again: online, and the fault is restored.
        again = FakeUitd(ctr.port or 0, ADDRESS)
        again.keepalive()
        assert again.next_frame() is not None
        wait_until(lambda: sorted(e["active"] for e in events(store, "link_fault"))
                   == [False, True], "the link fault restored")
        wait_until(lambda: c.registry.gateways[GATEWAY].state == "online", "online again")
        again.close()


def test_garbage_costs_only_its_own_connection(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with centre(tmp_path, mosquitto) as (_, ctr, _):
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        bad = FakeUitd(ctr.port or 0, ADDRESS + 1)
        bad.send_raw(b"@@" + bytes(range(256)) * 8 + b"\xff" * 16384)
        assert bad.wait_closed(), "garbage kept its connection"
        half = FakeUitd(ctr.port or 0, ADDRESS + 2)
        half.send_raw(fire_alarm_raw()[:40])  # half a frame, then nothing
        raw = uitd.upload(fire_alarm())
        assert confirm_for(uitd, raw)
        assert ctr.counters["closed_garbage"] == 1
        assert any(k.startswith("decode_") for k in ctr.counters)
        assert not half.eof  # a half frame alone waits for its silence timeout
        for u in (uitd, bad, half):
            u.close()


def fire_alarm_raw() -> bytes:
    session = Session(address_from_int(ADDRESS + 2), bytes(6))
    return session.send(Command.SEND_DATA, fire_alarm(), time.monotonic())


def test_a_second_connection_replaces_the_first(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with centre(tmp_path, mosquitto) as (_, ctr, _):
        first = FakeUitd(ctr.port or 0, ADDRESS)
        first.keepalive()
        assert first.next_frame() is not None
        second = FakeUitd(ctr.port or 0, ADDRESS)
        second.keepalive()
        assert second.next_frame() is not None
        assert first.wait_closed()
        assert ctr.counters["replaced"] == 1
        first.close()
        second.close()


def _serve_commands(uitd: FakeUitd, seen: list[Any], stop: threading.Event) -> None:
    """The UITD's side: confirm each control frame; answer a check-post (91) with the
    operator's answer (type 24, bit 5, 图14), a read of the UITD (81) with its state (21)."""
    from protocols.gb26875 import UitdState, UitdStatus
    while not stop.is_set():
        frame = uitd.next_frame(timeout=0.2)
        if frame is None:
            if uitd.eof:
                return
            continue
        if frame.command not in (Command.CONTROL, Command.REQUEST):
            continue
        adu = decode_adu(frame.adu)
        seen.append(adu)
        if frame.command == Command.REQUEST:
            answer = ApplicationData(21, (UitdStatus(UitdState(0x11), TimeLabel(
                1, 2, 3, 4, 5, 26)),))  # 图13: normal + backup power fault
            uitd.send_raw(uitd.session.respond(frame, answer))
            continue
        uitd.send_raw(uitd.session.confirm(frame))
        if isinstance(adu, ApplicationData) and isinstance(adu.objects[0], CheckPost):
            uitd.upload(ApplicationData(24, (UitdOperationRecord(
                UitdOperation.CHECK_POST_ANSWER, 7, TimeLabel(9, 8, 7, 6, 12, 26)),)))


def test_clock_sync_check_post_and_read_reach_the_uitd(mosquitto: Mosquitto,
                                                        tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    with centre(tmp_path, mosquitto) as (_, ctr, _):
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        uitd.keepalive()
        assert uitd.next_frame() is not None
        seen: list[Any] = []
        stop = threading.Event()
        t = threading.Thread(target=_serve_commands, args=(uitd, seen, stop), daemon=True)
        t.start()
        try:
            out = asyncio.run(run_command(ctr, lambda: clock_sync(ctr, GATEWAY)))
            assert out["confirmed"] is True
            assert isinstance(seen[0].objects[0], ClockSync)
            out = asyncio.run(run_command(ctr, lambda: check_post(ctr, f"0x{ADDRESS:012x}", 5)))
            assert out["confirmed"] is True
            assert seen[1].objects[0] == CheckPost(5)
            wait_until(lambda: len(events(store, "check_post")) == 1, "the check-post answer")
            assert events(store, "check_post")[0]["gateway"] == GATEWAY
            out = asyncio.run(run_command(ctr, lambda: read(ctr, GATEWAY, "uitd")))
            assert out["records"] >= 1
            assert any(e["active"] for e in events(store, "backup_power_fault"))
        finally:
            stop.set()
            t.join(5)
            uitd.close()
        with pytest.raises(Exception, match="not connected"):
            wait_until(lambda: ctr.devices[GATEWAY].link is None, "the link gone")
            asyncio.run(run_command(ctr, lambda: clock_sync(ctr, GATEWAY)))


def test_a_uitd_that_never_answers_fails_its_command_alone(mosquitto: Mosquitto,
                                                           tmp_path: Path) -> None:
    with centre(tmp_path, mosquitto, command_timeout_s=0.2, command_retries=1) as (_, ctr, _):
        mute = FakeUitd(ctr.port or 0, ADDRESS)
        mute.keepalive()
        assert mute.next_frame() is not None
        with pytest.raises(Exception, match="no confirm after 2"):
            asyncio.run(run_command(ctr, lambda: clock_sync(ctr, GATEWAY)))
        assert ctr.counters["command_failed"] == 1
        raw = mute.upload(fire_alarm())  # the link itself still works
        frames = [mute.next_frame() for _ in range(3)]  # two unanswered clock syncs, a confirm
        assert any(f is not None and f.command == Command.CONFIRM and
                   f.serial == (raw[2] | raw[3] << 8) for f in frames)
        mute.close()


def test_two_collectors_a_uitd_moved_keeps_its_records_once(mosquitto: Mosquitto,
                                                            tmp_path: Path) -> None:
    """Two collectors on one host, each its own port and state, one store: the UITD dials A,
    then (A's link lost, as behind a TCP load balancer) B. Every record is stored once, and
    the two collectors' numbering never collides (one epoch per collector)."""
    store = tmp_path / "store.sqlite"
    with centre(tmp_path, mosquitto, "ca") as (a, ctr_a, _), \
            centre(tmp_path, mosquitto, "cb") as (b, ctr_b, _):
        assert ctr_a.port != ctr_b.port and ctr_a.epoch != ctr_b.epoch
        uitd = FakeUitd(ctr_a.port or 0, ADDRESS)
        raw = uitd.upload(fire_alarm(7))
        assert confirm_for(uitd, raw)
        uitd.close()
        moved = FakeUitd(ctr_b.port or 0, ADDRESS)
        for adu in (fire_alarm(8), fire_alarm(8, active=False, second=9)):
            raw = moved.upload(adu)
            assert confirm_for(moved, raw)
        fires = events(store, "fire_alarm")
        assert sorted((f["source"][-2:], f["active"]) for f in fires) == [
            ("07", True), ("08", False), ("08", True)]
        assert {f["gateway"] for f in fires} == {GATEWAY}
        assert len({(f["source"], f["active"], f["seq"]) for f in fires}) == 3
        # Each collector's ledger holds its own stream, without gaps.
        stats_a = a.ledger.stats().gateways[GATEWAY]
        stats_b = b.ledger.stats().gateways[GATEWAY]
        assert (stats_a.epoch, stats_a.stored, stats_a.gaps) == (ctr_a.epoch, 1, 0)
        assert (stats_b.epoch, stats_b.stored, stats_b.gaps) == (ctr_b.epoch, 2, 0)
        wait_until(lambda: b.registry.gateways.get(GATEWAY) is not None and
                   b.registry.gateways[GATEWAY].state == "online", "online at B")
        moved.close()


def test_a_restart_continues_the_sequence(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    with centre(tmp_path, mosquitto) as (_, ctr, _):
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        raw = uitd.upload(fire_alarm(7))
        assert confirm_for(uitd, raw)
        uitd.close()
    with centre(tmp_path, mosquitto) as (c, ctr, _):
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        raw = uitd.upload(fire_alarm(8))
        assert confirm_for(uitd, raw)
        uitd.close()
        assert sorted(f["seq"] for f in events(store, "fire_alarm")) == [1, 2]
        assert c.ledger.stats().gateways[GATEWAY].gaps == 0


def test_a_flood_costs_only_its_own_link(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with centre(tmp_path, mosquitto, max_frames_per_s=5.0, flood_burst=10,
                accept_unknown=True) as (_, ctr, _):
        calm = FakeUitd(ctr.port or 0, ADDRESS)
        flood = FakeUitd(ctr.port or 0, ADDRESS + 1)
        with contextlib.suppress(OSError):  # the centre may close it while we still write
            for _ in range(60):
                flood.keepalive()
        assert flood.wait_closed(), "a flood kept its link"
        assert ctr.counters["closed_flood"] == 1
        raw = calm.upload(fire_alarm())
        assert confirm_for(calm, raw)
        calm.close()
        flood.close()


def test_the_connection_cap_is_counted(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with centre(tmp_path, mosquitto, max_connections=2) as (_, ctr, _):
        first = FakeUitd(ctr.port or 0, ADDRESS)
        second = FakeUitd(ctr.port or 0, ADDRESS + 1)
        wait_until(lambda: len(ctr.links) == 2, "two links")
        third = FakeUitd(ctr.port or 0, ADDRESS + 2)
        assert third.wait_closed()
        assert ctr.counters["refused_max_connections"] == 1
        raw = first.upload(fire_alarm())
        assert confirm_for(first, raw)
        for u in (first, second, third):
            u.close()


def test_an_oversized_length_is_denied_and_the_link_goes_on(mosquitto: Mosquitto,
                                                             tmp_path: Path) -> None:
    with centre(tmp_path, mosquitto) as (_, ctr, _):
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        uitd.keepalive()
        assert uitd.next_frame() is not None
        good = uitd.session.send(Command.SEND_DATA, fire_alarm(), time.monotonic())
        bad = bytearray(good)
        bad[24:26] = (0xFFFF).to_bytes(2, "little")  # 表1 bytes 25-26: ADU length
        uitd.send_raw(bytes(bad) + good)
        deny = uitd.next_frame()  # §6.5.3: a check error is denied, by the serial it carries
        assert deny is not None and deny.command == Command.DENY
        assert confirm_for(uitd, good)
        assert ctr.counters["decode_bad_length"] >= 1
        assert not uitd.eof
        uitd.close()


def test_store_down_the_uitd_reconnects_and_resends_stored_once(mosquitto: Mosquitto,
                                                                 tmp_path: Path) -> None:
    """The upload taken on the first link is still being stored when the UITD gives up on it,
    dials again and resends (numbering restarted, §6.5.5, 表1): the resend waits behind it and
    is confirmed once it is stored; the record is stored once."""
    store = tmp_path / "store.sqlite"
    with centre(tmp_path, mosquitto) as (_, ctr, sink):
        sink.down = True
        first = FakeUitd(ctr.port or 0, ADDRESS)
        raw = first.upload(fire_alarm())
        wait_until(lambda: sink.failed >= 2, "the writer trying the store")
        first.close()
        again = FakeUitd(ctr.port or 0, ADDRESS)
        resend = again.upload(fire_alarm())  # serial 0 again on the new link
        assert resend[2:4] == raw[2:4]
        wait_until(lambda: sink.failed >= 4, "more attempts")
        assert again.next_frame(timeout=0.5) is None, "confirmed before it was stored"
        sink.down = False
        assert confirm_for(again, resend)
        assert len(events(store, "fire_alarm")) == 1
        assert ctr.counters["confirm_lost"] == 1 and ctr.counters["duplicate"] == 1
        again.close()


def test_hostile_description_text_is_stored_exactly(mosquitto: Mosquitto,
                                                    tmp_path: Path) -> None:
    """A 部件说明 is text from the field: newline, comma, '=', quote, backslash and ESC are
    stored as sent (escaping is the display's job), and the fire alarm is not lost over them."""
    store = tmp_path / "store.sqlite"
    hostile = 'a\nb,c=d"e\\f\x1bg 东'
    with centre(tmp_path, mosquitto) as (_, ctr, _):
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        raw = uitd.upload(fire_alarm(description=hostile))
        assert confirm_for(uitd, raw)
        (fire,) = events(store, "fire_alarm")
        assert fire["description"] == hostile
        uitd.close()


@pytest.mark.parametrize("profile", ["dahua", "handshake"])
def test_keepalives_and_handshakes_are_answered(mosquitto: Mosquitto, tmp_path: Path,
                                                profile: str) -> None:
    """Dahua's keep-alive command (0x07) is confirmed; the handshake dialect's 1-byte ADU 0x16
    is answered with command 3 carrying 0x17 (docs/gb26875.md, "Dialect profiles"). A control
    command from a UITD (the centre's own job) is denied (§6.5.3)."""
    from protocols.gb26875 import get_profile
    p = get_profile(profile)
    uitds = [{"address": f"0x{ADDRESS:012x}", "gateway": GATEWAY, "site": SITE,
              "profile": profile}]
    with centre(tmp_path, mosquitto, uitd=uitds) as (_, ctr, _):
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        uitd.session = Session(address_from_int(ADDRESS), bytes(6), p)
        if profile == "dahua":
            assert p.keepalive_command is not None
            raw = uitd.session.send(p.keepalive_command, None, time.monotonic())
            uitd.send_raw(raw)
            assert confirm_for(uitd, raw)
            assert ctr.counters["keepalives"] == 1
        else:
            from protocols.gb26875 import Frame, encode_frame
            hello = Frame(7, Command.SEND_DATA, p.handshake_request or b"",
                          address_from_int(ADDRESS), bytes(6), TimeLabel(0, 0, 0, 1, 1, 26),
                          p.version)
            uitd.send_raw(encode_frame(hello))
            answer = uitd.next_frame()
            assert answer is not None and answer.command == Command.CONFIRM
            assert answer.adu == p.handshake_reply and answer.serial == 7
        control = uitd.session.send(Command.CONTROL, ApplicationData(90, (ClockSync(
            TimeLabel(0, 0, 0, 1, 1, 26)),)), time.monotonic())
        uitd.send_raw(control)
        deny = uitd.next_frame()
        assert deny is not None and deny.command == Command.DENY
        assert ctr.counters["unexpected_command"] == 1
        uitd.close()


def test_a_port_in_use_is_a_clear_error_at_start(mosquitto: Mosquitto, tmp_path: Path) -> None:
    import socket

    from collector.uitd.centre import CentreError
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(CentreError, match=f"listen 127.0.0.1:{port}"), \
                centre(tmp_path, mosquitto, listen=f"127.0.0.1:{port}"):
            pass
    finally:
        taken.close()
