"""A check-post (查岗, type 91) from a higher centre reaches the people on duty and is answered
when they answer (collector/uitd/upstream.py, ``CheckPosts``; docs/gb26875-upstream.md).

The higher centre is the small centre of the other upstream tests (upstream_centre.py: the
protocols/gb26875 codec on a real loopback socket) that can also send its own packets; the
alarm book is a real one in a temporary directory. A check-post opens an alarm at the
upstream's site, seen by the users whose sites cover it; acknowledging it through the book
queues a type 24 with bit 5 and the user's operator number, which the centre receives and
confirms; a duplicate opens nothing; nothing is answered without an acknowledgement."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from collector.alarms.book import AlarmBook
from collector.alarms.model import Alarm, AlarmChange, Change
from collector.api.auth import User
from collector.config import ConfigError, load_config, parse_config
from collector.uitd.config import UpstreamConfig
from collector.uitd.upstream import Forwarding
from protocols.gb26875 import (
    ApplicationData,
    CheckPost,
    Command,
    DecodeError,
    Frame,
    Reserved,
    Session,
    StreamDecoder,
    TimeLabel,
    UitdOperation,
    UitdOperationRecord,
    address_from_int,
    decode_adu,
    encode_frame,
)
from tests.collector.conftest import config_data, running, wait_until
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port

from .test_upstream_link import _alarms
from .upstream_centre import MiniCentre, Received

UITD = 0x0000000A0001
OPERATOR = "op-" + "0123456789abcdef" * 3
FIRM = "fm-" + "9a8b7c6d5e4f3a2b" * 3
USERS = [{"name": "duty-officer", "token": OPERATOR, "role": "operator", "sites": ["*"]},
         {"name": "hz-firm", "token": FIRM, "role": "operator", "sites": ["hz-*"]}]
"""The API's users: the centre's duty officer (every site), a maintenance firm (``hz-*``)."""
GATEWAY, SOURCE = "upstream:province", "gb26875/upstream/province"


@dataclass
class CheckingCentre(MiniCentre):
    """The small centre, also sending its own packets (91 check-posts, 81 reads) and keeping
    the UITD's answers to them (confirms, responses). Every write under ``lock``."""

    answers: list[Frame] = field(default_factory=list)
    _session: Session | None = None

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        session = Session(address_from_int(self.address), address_from_int(UITD))
        with self.lock:
            self._session = session
        decoder = StreamDecoder()
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                for item in decoder.feed(data):
                    if isinstance(item, DecodeError):
                        continue
                    if item.command == Command.SEND_DATA:
                        self._upload(conn, session, item)
                    else:
                        with self.lock:
                            self.answers.append(item)
        finally:
            with self.lock:
                self._session = None

    def _upload(self, conn: socket.socket, session: Session, frame: Frame) -> None:
        with self.lock:  # confirmed, always
            self.received.append(Received(frame, True))
            conn.sendall(session.confirm(frame))

    @property
    def linked(self) -> bool:
        with self.lock:
            return self._session is not None

    def wait_link(self, before: int = 0) -> None:
        """Wait for a link accepted after the ``before``-th (one link at a time: the
        earlier one is over)."""
        wait_until(lambda: self.connections > before and self.linked, "the upstream link")

    def send(self, command: int, adu: ApplicationData) -> Frame:
        """Send a packet of the centre's own; returns it (its serial, for the answer)."""
        with self.lock:
            assert self._session is not None and self._conn is not None
            raw = self._session.send(command, adu, 0.0)
            self._conn.sendall(raw)
        [frame] = [f for f in StreamDecoder().feed(raw) if isinstance(f, Frame)]
        return frame

    def again(self, frame: Frame) -> None:
        """The same packet once more (same serial, same bytes): a retransmission."""
        with self.lock:
            assert self._conn is not None
            self._conn.sendall(encode_frame(frame))

    def answered(self, serial: int, command: int) -> int:
        with self.lock:
            return sum(1 for f in self.answers if f.serial == serial and f.command == command)

    def settle(self) -> None:
        """A barrier: read the UITD state (81) and wait for the response. The forwarder
        handles the centre's packets in order on one thread, so everything sent before has
        been handled, alarms raised or not, when the response arrives."""
        ask = self.send(Command.REQUEST, ApplicationData(81, (Reserved(),)))
        wait_until(lambda: self.answered(ask.serial, Command.RESPONSE) == 1,
                   "the response to a read of the UITD state")


def _config(port: int, **over: object) -> UpstreamConfig:
    base = UpstreamConfig(name="province", host="127.0.0.1", port=port, uitd_address=UITD,
                          timeout_s=0.3, retries=2, reconnect_min_s=0.05, reconnect_max_s=0.2,
                          keepalive_s=60.0, site="duty-room", operators=(("alice", 7),))
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def _check_post(minutes: int) -> ApplicationData:
    return ApplicationData(91, (CheckPost(minutes),))


def _open_check_posts(book: AlarmBook) -> list[Alarm]:
    return [a for a in book.list(state="open") if a.type == "check_post"]


def _answer(frame: Frame) -> UitdOperationRecord:
    adu = decode_adu(frame.adu)
    assert isinstance(adu, ApplicationData) and adu.type_mark == 24
    [obj] = adu.objects
    assert isinstance(obj, UitdOperationRecord)
    return obj


@pytest.fixture
def centre() -> Iterator[CheckingCentre]:
    c = CheckingCentre()
    c.start()
    yield c
    c.stop()


@pytest.fixture
def book(tmp_path: Path) -> Iterator[AlarmBook]:
    b = AlarmBook(tmp_path / "alarms.sqlite")
    yield b
    b.close()


def _forwarding(tmp: Path, cfg: UpstreamConfig, book: AlarmBook | None) -> Forwarding:
    return Forwarding(tmp, [cfg], tz=UTC, alarms=book).start()


def test_a_check_post_opens_an_alarm_and_an_acknowledgement_answers_it(
        tmp_path: Path, centre: CheckingCentre, book: AlarmBook) -> None:
    changes: list[Change] = []
    book.subscribe(changes.append)
    fwd = _forwarding(tmp_path, _config(centre.port), book)
    stats = fwd.forwarders[0].stats
    try:
        centre.wait_link()
        ask = centre.send(Command.CONTROL, _check_post(10))
        wait_until(lambda: len(_open_check_posts(book)) == 1, "the check-post's alarm")
        wait_until(lambda: centre.answered(ask.serial, Command.CONFIRM) == 1,
                   "the check-post confirmed, as before")
        [a] = _open_check_posts(book)
        assert (a.gateway, a.source, a.site, a.type, a.priority, a.state) == \
            (GATEWAY, SOURCE, "duty-room", "check_post", "alarm", "active")
        assert "province" in a.description and "查岗" in a.description
        assert "10分钟" in a.description and "within 10 min" in a.description
        # Seen by the operators whose sites cover it, not by the others.
        duty = User("alice", "operator", ("duty-*",))
        other = User("bob", "operator", ("hz-xihu-*",))
        assert [x.id for x in book.list(state="open", sites=duty.sees)] == [a.id]
        assert book.list(state="open", sites=other.sees) == []

        # No answer without an acknowledgement: an upload queued after the alarm went up
        # and was confirmed (the link's loop went round), and still no type 24.
        fwd.offer(_alarms(1, 1))
        wait_until(lambda: len(centre.uploads(2)) == 1, "a fire alarm confirmed")
        assert centre.uploads(24, confirmed=False) == []
        assert stats["check_post_answered"] == 0 and fwd.queue.pending("province") == 0

        acked = book.acknowledge(a.id, by="alice", note="在岗", origin="test")
        assert acked.acknowledged_ms is not None
        wait_until(lambda: len(centre.uploads(24)) == 1, "the check-post answer confirmed")
        [frame] = centre.uploads(24)
        answer = _answer(frame)
        assert answer.flags & UitdOperation.CHECK_POST_ANSWER  # 查岗应答, bit 5
        assert answer.flags == UitdOperation.CHECK_POST_ANSWER and answer.operator == 7
        at = datetime.fromtimestamp(acked.acknowledged_ms // 1000, UTC).replace(tzinfo=None)
        assert answer.time == TimeLabel.from_datetime(at)  # when alice answered
        wait_until(lambda: fwd.queue.pending("province") == 0, "the answer off the queue")
        # Answered: the alarm is cleared, so closed; nothing late.
        wait_until(lambda: not (book.get(a.id) or a).open, "the alarm closed")
        closed = book.get(a.id)
        assert closed is not None and closed.state == "cleared"
        assert stats["check_post_answered"] == 1 and stats["check_post_late"] == 0
        wait_until(lambda: [(c.alarm.id, c.what) for c in changes
                            if isinstance(c, AlarmChange)] ==
                   [(a.id, "raised"), (a.id, "acknowledged"), (a.id, "cleared")],
                   "raised, acknowledged, cleared: told to the book's subscribers in order")
        assert centre.uploads(24, confirmed=False) == [frame]  # once
    finally:
        fwd.close()


def test_a_duplicate_opens_no_second_alarm_and_a_new_check_post_re_raises_the_open_one(
        tmp_path: Path, centre: CheckingCentre, book: AlarmBook) -> None:
    fwd = _forwarding(tmp_path, _config(centre.port), book)
    try:
        centre.wait_link()
        ask = centre.send(Command.CONTROL, _check_post(5))
        wait_until(lambda: len(_open_check_posts(book)) == 1, "the check-post's alarm")
        centre.again(ask)  # the centre did not see our confirm: the same packet again
        wait_until(lambda: centre.answered(ask.serial, Command.CONFIRM) == 2,
                   "the duplicate confirmed too")
        centre.settle()
        [a] = _open_check_posts(book)
        assert a.raise_count == 1
        assert len(book.list(state="all")) == 1
        assert fwd.forwarders[0].stats["control_91"] == 1
        assert fwd.forwarders[0].stats["check_post_alarms"] == 1

        centre.send(Command.CONTROL, _check_post(5))  # a new check-post, not yet answered
        wait_until(lambda: _open_check_posts(book)[0].raise_count == 2, "the same alarm again")
        assert len(book.list(state="all")) == 1
        centre.settle()
        assert centre.uploads(24, confirmed=False) == []  # nobody acknowledged
    finally:
        fwd.close()


def test_a_late_answer_by_a_resolution_is_answered_and_counted_late(
        tmp_path: Path, centre: CheckingCentre, book: AlarmBook) -> None:
    fwd = _forwarding(tmp_path, _config(centre.port), book)
    try:
        centre.wait_link()
        centre.send(Command.CONTROL, _check_post(1))
        wait_until(lambda: len(_open_check_posts(book)) == 1, "the check-post's alarm")
        [a] = _open_check_posts(book)
        due = fwd.queue.check_post_due("province")
        assert due is not None and 59_000 <= due - a.raised_ms <= 61_000
        # Stand-in for a minute passing: the stored deadline moved into the past.
        fwd.queue.set_check_post_due("province", a.raised_ms - 1)
        # Resolving acknowledges too; carol is not in `operators`.
        book.resolve(a.id, verdict="real", by="carol", note=None, origin="test")
        wait_until(lambda: len(centre.uploads(24)) == 1, "the late answer")
        assert _answer(centre.uploads(24)[0]).operator == 1  # DEFAULT_OPERATOR
        stats = fwd.forwarders[0].stats
        wait_until(lambda: stats["check_post_late"] == 1, "the answer counted late")
        assert stats["check_post_answered"] == 1
    finally:
        fwd.close()


def test_an_answer_survives_a_restart_and_an_acknowledgement_while_stopped_is_answered(
        tmp_path: Path, centre: CheckingCentre, book: AlarmBook) -> None:
    """Acknowledged while the centre is away: the answer is queued durably, and sent by the
    next forwarder once the centre is back. Acknowledged while no forwarder runs (the
    command line, a collector stopped): answered when it starts."""
    fwd = _forwarding(tmp_path, _config(centre.port), book)
    try:
        centre.wait_link()
        centre.send(Command.CONTROL, _check_post(10))
        wait_until(lambda: len(_open_check_posts(book)) == 1, "the first alarm")
        centre.stop()
        [first] = _open_check_posts(book)
        book.acknowledge(first.id, by="alice", note=None, origin="test")
        wait_until(lambda: fwd.queue.pending("province") == 1, "the answer queued")
        wait_until(lambda: not (book.get(first.id) or first).open, "the first alarm closed")
    finally:
        fwd.close()
    centre.start()
    before = centre.connections
    fwd = _forwarding(tmp_path, _config(centre.port), book)
    try:
        wait_until(lambda: len(centre.uploads(24)) == 1, "the answer sent after the restart")
        assert _answer(centre.uploads(24)[0]).operator == 7
        centre.wait_link(before)
        centre.send(Command.CONTROL, _check_post(10))
        wait_until(lambda: len(_open_check_posts(book)) == 1, "the second alarm")
    finally:
        fwd.close()
    [second] = _open_check_posts(book)
    assert second.id != first.id
    before = centre.connections
    fwd = _forwarding(tmp_path, _config(centre.port), book)  # open, not acknowledged
    try:
        centre.wait_link(before)
        centre.settle()
        assert len(centre.uploads(24, confirmed=False)) == 1  # not answered at the start
        assert _open_check_posts(book) == [second]
    finally:
        fwd.close()
    book.acknowledge(second.id, by="cli-user", note=None, origin="cli")  # nobody subscribed
    fwd = _forwarding(tmp_path, _config(centre.port), book)
    try:
        wait_until(lambda: len(centre.uploads(24)) == 2, "answered by the next forwarder")
        wait_until(lambda: not (book.get(second.id) or second).open, "the second alarm closed")
        assert fwd.forwarders[0].stats["check_post_answered"] == 1
    finally:
        fwd.close()


def test_without_an_alarm_book_a_check_post_is_confirmed_counted_and_not_answered(
        tmp_path: Path, centre: CheckingCentre) -> None:
    fwd = _forwarding(tmp_path, _config(centre.port), None)
    try:
        centre.wait_link()
        ask = centre.send(Command.CONTROL, _check_post(10))
        centre.settle()
        assert centre.answered(ask.serial, Command.CONFIRM) == 1
        stats = fwd.forwarders[0].stats
        assert stats["check_post_unseen"] == 1 and stats["check_post_alarms"] == 0
        assert centre.uploads(24, confirmed=False) == []
    finally:
        fwd.close()


def test_the_default_site_is_the_upstreams_own(tmp_path: Path, centre: CheckingCentre,
                                               book: AlarmBook) -> None:
    fwd = _forwarding(tmp_path, _config(centre.port, site=None), book)
    try:
        centre.wait_link()
        centre.send(Command.CONTROL, _check_post(10))
        wait_until(lambda: len(_open_check_posts(book)) == 1, "the check-post's alarm")
        assert _open_check_posts(book)[0].site == GATEWAY
    finally:
        fwd.close()


def test_a_check_post_right_after_an_acknowledgement_opens_a_new_alarm(
        tmp_path: Path, book: AlarmBook) -> None:
    """Acknowledged, and the next check-post arrives before the forwarder's loop came round
    to the answer: the answer goes first (closing its alarm, judged against its own
    deadline), so the new check-post opens an alarm of its own for someone to answer. Driven
    on this thread in the forwarder's place (not started: no link)."""
    fwd = Forwarding(tmp_path, [_config(1)], tz=UTC, alarms=book)
    try:
        posts = fwd.forwarders[0].check_posts
        posts.asked(1)
        [first] = _open_check_posts(book)
        book.acknowledge(first.id, by="alice", note=None, origin="test")
        posts.asked(1)
        [second] = _open_check_posts(book)
        assert second.id != first.id
        assert (second.acknowledged, second.raise_count) == (False, 1)
        closed = book.get(first.id)
        assert closed is not None and not closed.open
        assert fwd.queue.pending("province") == 1  # the first answer, on time
        stats = fwd.forwarders[0].stats
        assert (stats["check_post_answered"], stats["check_post_late"]) == (1, 0)
    finally:
        fwd.close()


def test_in_a_collector_an_operator_answers_over_the_api(
        tmp_path: Path, centre: CheckingCentre, mosquitto: Mosquitto) -> None:
    """A real collector (in-process) with its API: the check-post's alarm is listed for the
    duty officer (every site) and not for a maintenance firm (``hz-*``); the duty officer
    acknowledges it over HTTP, and the answer carries the operator number ``operators`` gives
    that user."""
    port = free_port()
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(config_data(
        tmp_path / "state", mosquitto,
        http={"listen": f"127.0.0.1:{port}", "heartbeat_s": 1.0},
        user=USERS,
        gb26875={"listen": "", "upstream": [{
            "name": "province", "connect": f"127.0.0.1:{centre.port}",
            "uitd_address": f"0x{UITD:012x}", "timeout_s": 1.0, "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5, "site": "duty-room",
            "operators": {"duty-officer": 5}}]})), encoding="utf-8")
    url = f"http://127.0.0.1:{port}/api/v1"
    duty = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {OPERATOR}"},
                        timeout=30)
    firm = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {FIRM}"},
                        timeout=30)

    def listed(client: httpx.Client) -> list[dict[str, Any]]:
        r = client.get("/alarms", params={"state": "open"})
        assert r.status_code == 200
        return [a for a in r.json()["alarms"] if a["type"] == "check_post"]

    try:
        with running(load_config(path)):
            centre.wait_link()
            centre.send(Command.CONTROL, _check_post(15))
            wait_until(lambda: len(listed(duty)) == 1, "the alarm listed for the duty officer")
            [alarm] = listed(duty)
            assert (alarm["site"], alarm["gateway"], alarm["priority"]) == \
                ("duty-room", GATEWAY, "alarm")
            assert "15分钟" in alarm["description"]
            assert listed(firm) == []
            r = duty.post(f"/alarms/{alarm['id']}/ack", json={"note": "在岗"})
            assert r.status_code == 200
            wait_until(lambda: len(centre.uploads(24)) == 1, "the answer at the centre")
            answer = _answer(centre.uploads(24)[0])
            assert answer.flags == UitdOperation.CHECK_POST_ANSWER and answer.operator == 5
            wait_until(lambda: listed(duty) == [], "the answered alarm closed")
    finally:
        duty.close()
        firm.close()


def test_site_and_operators_are_validated() -> None:
    up = {"name": "province", "connect": "h:1", "uitd_address": 1}
    [cfg] = _upstreams({**up, "site": "duty-room", "operators": {"alice": 0, "bob": 255}})
    assert cfg.check_post_site == "duty-room"
    assert (cfg.operator_of("alice"), cfg.operator_of("bob"), cfg.operator_of("carol"),
            cfg.operator_of(None)) == (0, 255, 1, 1)
    [default] = _upstreams(up)
    assert default.check_post_site == GATEWAY and default.operator_of("alice") == 1
    cases: list[tuple[dict[str, Any], str, str]] = [
            ({"operators": {"alice": 256}}, "gb26875.upstream[0].operators.alice", "255"),
            ({"operators": {"alice": "7"}}, "gb26875.upstream[0].operators.alice", "integer"),
            ({"operators": 7}, "gb26875.upstream[0].operators", "table"),
            ({"site": "duty room"}, "gb26875.upstream[0].site", "1-64 chars")]
    for bad, key, message in cases:
        with pytest.raises(ConfigError) as info:
            _upstreams({**up, **bad})
        assert info.value.key == key, str(info.value)
        assert message in info.value.message


def _upstreams(section: dict[str, Any]) -> tuple[UpstreamConfig, ...]:
    gb = parse_config({"gb26875": {"listen": "", "upstream": [section]}}).gb26875
    assert gb is not None
    return gb.upstreams
