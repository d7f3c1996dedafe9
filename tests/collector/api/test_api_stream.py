"""The stream: a client that stops reading is dropped and counted while the book's writer
goes on unhindered and the other clients get everything; heartbeats; the client limit;
tickets; frames that hostile text cannot break."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable

import httpx

from collector.alarms.book import Signal
from collector.alarms.model import AlarmChange
from collector.api.stream import encode_change, frame
from tests.collector.conftest import WAIT, wait_until

from .conftest import OPERATOR, VIEWER, Api

BIG = "长描述 " * 2000  # ~20 kB per event: a few hundred fill every buffer on the way
GROUPS = 12  # of 100 changes: ~24 MB for the stalled client, far past the socket buffers


def read_events(r: httpx.Response, into: list[tuple[str, str]], stop: threading.Event) -> None:
    event = ""
    try:
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                into.append((event, line[6:]))
            elif line.startswith(":"):
                into.append(("comment", line))
            if stop.is_set():
                return
    except httpx.HTTPError:
        pass


def stalled_client(api: Api, token: str) -> socket.socket:
    """A stream client that connects, reads the headers and then never reads again."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = api.url.removeprefix("http://").split(":")
    s.connect((host, int(port)))
    s.sendall(f"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
              "\r\n".encode())
    head = b""
    while b"event: hello" not in head:
        chunk = s.recv(1024)
        assert chunk, "the server closed the stalled stream at once"
        head += chunk
    return s


def test_a_stalled_client_is_dropped_and_nobody_waits(api_factory: Callable[..., Api]) -> None:
    api = api_factory(stream_queue=200)
    stalled = stalled_client(api, VIEWER)
    events: list[tuple[str, str]] = []
    stop = threading.Event()
    with httpx.Client(timeout=httpx.Timeout(WAIT, read=WAIT)) as client, client.stream(
            "GET", api.url + "/api/v1/stream",
            headers={"Authorization": f"Bearer {OPERATOR}"}) as r:
        reader = threading.Thread(target=read_events, args=(r, events, stop), daemon=True)
        reader.start()
        wait_until(lambda: any(e == "hello" for e, _ in events), "the reader's hello")
        assert api.server.broadcaster.clients == 2
        # The writer's side: thousands of changes, in groups as the writer makes them. It
        # never waits for a stream client (it would hang here, not fail a timing); the test
        # paces itself on the reading client, whose queue holds a group.
        total = 0
        for group in range(GROUPS):
            signals = [Signal("raise", "gw-1", "hz-1", f"s-{group}-{i}", "fault", "alarm", BIG,
                              stamp=(1, group * 100 + i)) for i in range(100)]
            total += api.book.apply(signals)
            wait_until(lambda n=total: sum(1 for e, _ in events if e == "alarm") == n,
                       "the group at the reading client")
        assert total == GROUPS * 100
        wait_until(lambda: api.server.broadcaster.dropped == 1, "the stalled client dropped")
        stop.set()
    assert api.server.broadcaster.clients <= 1
    stats = httpx.get(api.url + "/api/v1/stats", headers={
        "Authorization": "Bearer " + "ad-" + "a1b2c3d4e5f60718" * 3}).json()
    assert stats["stream_dropped"] == 1
    # The reading client got them all, in order, each once.
    sources = [json.loads(d)["alarm"]["source"] for e, d in events if e == "alarm"]
    assert sources == [f"s-{g}-{i}" for g in range(GROUPS) for i in range(100)]
    # The stalled client, once it reads again, finds the stream ended with "dropped".
    stalled.settimeout(WAIT)
    rest = b""
    while True:
        chunk = stalled.recv(65536)
        if not chunk:
            break
        rest += chunk
        if b"event: dropped" in rest and rest.endswith(b"0\r\n\r\n"):
            break
    stalled.close()
    assert b"event: dropped" in rest


def test_heartbeats_and_a_client_that_leaves(api_factory: Callable[..., Api]) -> None:
    api = api_factory(heartbeat_s=0.05)
    events: list[tuple[str, str]] = []
    stop = threading.Event()
    with httpx.Client(timeout=WAIT) as client, client.stream(
            "GET", api.url + "/api/v1/stream",
            headers={"Authorization": f"Bearer {OPERATOR}"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        t = threading.Thread(target=read_events, args=(r, events, stop), daemon=True)
        t.start()
        wait_until(lambda: sum(1 for e, _ in events if e == "comment") >= 3, "heartbeats")
        stop.set()
    wait_until(lambda: api.server.broadcaster.clients == 0, "the client gone")


def test_client_limit(api_factory: Callable[..., Api]) -> None:
    api = api_factory(max_stream_clients=1)
    with httpx.Client(timeout=WAIT) as client, client.stream(
            "GET", api.url + "/api/v1/stream",
            headers={"Authorization": f"Bearer {OPERATOR}"}) as first:
        assert first.status_code == 200
        wait_until(lambda: api.server.broadcaster.clients == 1, "the first client")
        r = httpx.get(api.url + "/api/v1/stream", headers={"Authorization": f"Bearer {VIEWER}"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_clients"
    assert api.server.broadcaster.refused == 1


def test_a_ticket_opens_the_stream(api: Api) -> None:
    ticket = httpx.post(api.url + "/api/v1/stream-ticket",
                        headers={"Authorization": f"Bearer {VIEWER}"}).json()["ticket"]
    events: list[tuple[str, str]] = []
    stop = threading.Event()
    with httpx.Client(timeout=WAIT) as client, client.stream(
            "GET", api.url + "/api/v1/stream", params={"ticket": ticket}) as r:
        assert r.status_code == 200
        t = threading.Thread(target=read_events, args=(r, events, stop), daemon=True)
        t.start()
        wait_until(lambda: bool(events), "hello")
        assert json.loads(events[0][1])["user"]["name"] == "watcher"
        alarm = api.raise_alarm()
        wait_until(lambda: any(e == "alarm" for e, _ in events), "the alarm")
        stop.set()
    assert json.loads(next(d for e, d in events if e == "alarm"))["alarm"]["id"] == alarm.id


def test_hostile_text_stays_inside_its_frame(api: Api) -> None:
    hostile = "a\r\n\r\nevent: alarm\ndata: {\"forged\": true}\n\n\u2028\u0085\x00end"
    alarm = api.raise_alarm(description=hostile)
    encoded = encode_change(AlarmChange(alarm, "raised"), 7)
    lines = encoded.decode().split("\n")
    assert lines[:2] == ["id: 7", "event: alarm"]
    assert lines[2].startswith("data: ") and lines[3:] == ["", ""]
    assert "\r" not in encoded.decode()
    assert json.loads(lines[2][6:])["alarm"]["description"] == hostile
    assert frame("x", {"a": "\n"}) == b'event: x\ndata: {"a":"\\n"}\n\n'


def test_connections_are_bounded(api_factory: Callable[..., Api]) -> None:
    api = api_factory(max_connections=2, max_stream_clients=1)
    with httpx.Client(timeout=WAIT) as client, client.stream(
            "GET", api.url + "/api/v1/stream",
            headers={"Authorization": f"Bearer {OPERATOR}"}) as r:
        assert r.status_code == 200
        wait_until(lambda: api.server.broadcaster.clients == 1, "the stream open")
        with httpx.Client(timeout=WAIT) as second:  # keep-alive: holds the second connection
            me = second.get(api.url + "/api/v1/me",
                            headers={"Authorization": f"Bearer {VIEWER}"})
            assert me.status_code == 200
            third = httpx.get(api.url + "/api/v1/me",
                              headers={"Authorization": f"Bearer {VIEWER}"})
            assert third.status_code == 503
    wait_until(lambda: httpx.get(api.url + "/api/v1/me", headers={
        "Authorization": f"Bearer {VIEWER}"}).status_code == 200, "a connection free again")
