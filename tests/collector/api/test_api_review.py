"""The API security review's findings, each proved against a real uvicorn and a real book:
idle and half-sent connections cannot lock the API out (A1), one user cannot take every
stream slot and tickets are rate-limited (A2), notes refuse bidirectional, C1 and invisible
characters naming the code point (A4), and a site-limited admin's audit pages are full (A5)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from collector.api.config import UserConfig
from tests.collector.conftest import WAIT, wait_until

from .conftest import ADMIN, OPERATOR, USERS, VIEWER, Api
from .test_api_stream import read_events

HZ_ADMIN = "ha-" + "0f1e2d3c4b5a6978" * 3


def _connect(api: Api) -> socket.socket:
    host, port = api.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=WAIT)
    return s


def _read_to_end(s: socket.socket) -> bytes:
    """Everything the server sends until it closes (socket timeout WAIT: a server that
    never closes fails the test, it does not hang it)."""
    out = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return out
        out += chunk


# -- A1: idle connections ----------------------------------------------------------------------


def test_idle_sockets_from_one_host_do_not_lock_the_api_out(
        api_factory: Callable[..., Api]) -> None:
    api = api_factory(max_connections=5, max_stream_clients=2, max_connections_per_ip=3,
                      header_timeout_s=1.0)
    idle = [_connect(api) for _ in range(6)]  # connect and send nothing
    try:
        ends = [_read_to_end(s) for s in idle]
    finally:
        for s in idle:
            s.close()
    refused = [e for e in ends if e.startswith(b"HTTP/1.1 503")]
    assert len(refused) == 3 and b"too_many_connections" in refused[0]  # past the per-IP cap
    assert ends.count(b"") == 3  # the others closed at the head deadline, nothing sent
    # The same machine is served once the deadline has passed (it was 503 for ever before).
    r = api.client(OPERATOR).get("/api/v1/me")
    assert r.status_code == 200 and r.json()["name"] == "duty-officer"
    stats = api.client(ADMIN).get("/api/v1/stats").json()
    assert stats["connections_refused_per_ip"] == 3
    assert stats["connections_idle_closed"] == 3


def test_a_half_sent_head_and_a_dripping_kept_alive_connection_are_closed(
        api_factory: Callable[..., Api]) -> None:
    api = api_factory(header_timeout_s=1.0, keepalive_s=60)
    half = _connect(api)
    half.sendall(b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    kept = _connect(api)
    kept.sendall(f"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR}"
                 f"\r\n\r\n".encode())
    head = b""
    while b"duty-officer" not in head:
        chunk = kept.recv(4096)
        assert chunk, "closed before the first answer"
        head += chunk
    kept.sendall(b"G")  # one byte of a next request: uvicorn's keep-alive timer stops here
    try:
        assert _read_to_end(half) == b""
        assert _read_to_end(kept) == b""
    finally:
        half.close()
        kept.close()
    wait_until(lambda: api.server.guard.idle_closed == 2, "both counted")


def test_a_body_that_drips_is_answered_408_and_the_alarm_is_untouched(
        api_factory: Callable[..., Api]) -> None:
    """A whole head, then a body promised and not sent: the body has the head's deadline
    (it held the connection, and a slot of its address, for as long as the client liked)."""
    api = api_factory(header_timeout_s=1.0, keepalive_s=60)
    alarm = api.raise_alarm()
    s = _connect(api)
    try:
        s.sendall(f"POST /api/v1/alarms/{alarm.id}/ack HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {OPERATOR}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: 40\r\n\r\n{{\"note\": ".encode())  # 9 of the 40 bytes
        answer = _read_to_end(s)
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"timeout"' in answer.replace(b" ", b"")
    got = api.book.get(alarm.id)
    assert got is not None and not got.acknowledged
    # The same request sent whole is served (positive control: the route and token work).
    r = api.client(OPERATOR).post(f"/api/v1/alarms/{alarm.id}/ack", json={"note": "ok"})
    assert r.status_code == 200 and r.json()["acknowledged"] is True


def test_the_head_deadline_never_cuts_a_stream(api_factory: Callable[..., Api]) -> None:
    api = api_factory(header_timeout_s=0.3, heartbeat_s=0.1)
    events: list[tuple[str, str]] = []
    stop = threading.Event()
    with httpx.Client(timeout=httpx.Timeout(WAIT, read=WAIT)) as client, client.stream(
            "GET", api.url + "/api/v1/stream",
            headers={"Authorization": f"Bearer {VIEWER}"}) as r:
        reader = threading.Thread(target=read_events, args=(r, events, stop), daemon=True)
        reader.start()
        started = time.monotonic()
        # Heartbeats for well past the deadline (counted by the clock, not slept for).
        wait_until(lambda: time.monotonic() - started > 1.0 and
                   events.count(("comment", ": heartbeat")) >= 5, "heartbeats past 1 s")
        stop.set()
    assert api.server.guard.idle_closed == 0


# -- A2: streams per user, tickets -------------------------------------------------------------


def _ticket(c: httpx.Client) -> str:
    r = c.post("/api/v1/stream-ticket")
    assert r.status_code == 200, r.text
    ticket: str = r.json()["ticket"]
    return ticket


def test_one_user_cannot_take_every_stream_and_a_reopened_console_wins(
        api_factory: Callable[..., Api]) -> None:
    api = api_factory(max_stream_clients=3, max_streams_per_user=2, max_connections=20)
    viewer = api.client(VIEWER)
    streams: list[tuple[list[tuple[str, str]], threading.Thread]] = []
    stop = threading.Event()
    clients: list[httpx.Client] = []

    def open_stream(token_client: httpx.Client) -> list[tuple[str, str]]:
        events: list[tuple[str, str]] = []
        c = httpx.Client(timeout=httpx.Timeout(WAIT, read=WAIT))
        clients.append(c)

        def run() -> None:
            with c.stream("GET", api.url + "/api/v1/stream",
                          params={"ticket": _ticket(token_client)}) as r:
                if r.status_code != 200:
                    events.append(("status", str(r.status_code)))
                    return
                read_events(r, events, stop)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        streams.append((events, t))
        wait_until(lambda: any(e in ("hello", "status") for e, _ in events), "an answer")
        return events

    try:
        first = open_stream(viewer)
        open_stream(viewer)
        third = open_stream(viewer)  # one past the user's cap: the oldest goes
        wait_until(lambda: any(e == "replaced" for e, _ in first), "the oldest replaced")
        assert ("hello" in [e for e, _ in third])
        assert api.server.broadcaster.streams_of("watcher") == 2
        # The duty officer still gets a stream: the viewer holds only 2 of the 3 slots.
        officer = open_stream(api.client(OPERATOR))
        assert [e for e, _ in officer][:1] == ["hello"]
        assert api.server.broadcaster.refused == 0 and api.server.broadcaster.replaced == 1
        stats = api.client(ADMIN).get("/api/v1/stats").json()
        assert stats["stream_replaced"] == 1 and stats["stream_clients"] == 3
    finally:
        stop.set()
        for c in clients:
            c.close()


def test_stream_tickets_are_rate_limited_per_user(api_factory: Callable[..., Api]) -> None:
    api = api_factory(tickets_per_minute=3)
    viewer, officer = api.client(VIEWER), api.client(OPERATOR)
    for _ in range(3):
        _ticket(viewer)
    r = viewer.post("/api/v1/stream-ticket")
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    _ticket(officer)  # another user is not affected
    assert api.client(ADMIN).get("/api/v1/stats").json()["tickets_refused"] == 1


# -- A4: notes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["\u202e", "\u202a", "\u2066", "\u2069", "\x9b", "\x85",
                                 "\u2028", "\u200b", "\ufeff", "\x1b", "\x7f"])
def test_notes_refuse_bidi_c1_and_invisible_characters(api: Api, bad: str) -> None:
    alarm = api.raise_alarm()
    r = api.client(OPERATOR).post(f"/api/v1/alarms/{alarm.id}/ack",
                                  json={"note": f"3F east{bad}ward"})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert f"U+{ord(bad):04X}" in message and "position 7" in message
    assert api.book.get(alarm.id).acknowledged is False  # type: ignore[union-attr]


def test_notes_keep_tabs_line_breaks_and_chinese(api: Api) -> None:
    alarm = api.raise_alarm()
    note = "到场核实\n\t误报：厨房油烟"
    r = api.client(OPERATOR).post(f"/api/v1/alarms/{alarm.id}/ack", json={"note": note})
    assert r.status_code == 200 and r.json()["note"] == note


# -- A5: audit paging for a site-limited admin -------------------------------------------------


def test_a_site_limited_admins_audit_pages_are_full(api_factory: Callable[..., Api]) -> None:
    api = api_factory(users=(*USERS, UserConfig("hz-chief", HZ_ADMIN, "admin", ("hz-*",))))
    hz = [api.raise_alarm(site="hz-0001", source=f"hz/{i}", seq=i + 1) for i in range(3)]
    for a in hz:
        api.book.acknowledge(a.id, by="op", note=None, origin="cli")
    # Newer entries of a site the admin does not see fill the first places of the log.
    sh = [api.raise_alarm(site="sh-0009", source=f"sh/{i}", seq=100 + i) for i in range(6)]
    for a in sh:
        api.book.acknowledge(a.id, by="op", note=None, origin="cli")
    page = api.client(HZ_ADMIN).get("/api/v1/audit", params={"limit": 2}).json()["audit"]
    assert len(page) == 2  # was 0: the limit took the six sh entries, then the filter
    assert {e["alarm_id"] for e in page} <= {a.id for a in hz}
    everything = api.client(HZ_ADMIN).get("/api/v1/audit").json()["audit"]
    assert sorted(e["alarm_id"] for e in everything) == sorted(a.id for a in hz)
    assert len(api.client(ADMIN).get("/api/v1/audit").json()["audit"]) == 9
