"""InfluxSink's error reporting, against a real local HTTP server answering what InfluxDB can.

The server is a stdlib ``ThreadingHTTPServer`` on a free loopback port that answers each
``/api/v2/write`` with the next scripted status and headers and records the bodies it got, so
the real influxdb-client meets real HTTP responses (429 with Retry-After, 503 with an HTTP
date, 400 with InfluxDB's JSON error, 401, 422, 408, 500, a slow answer).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from collector.lineproto import to_line
from collector.points import Point
from collector.sinks import SinkConfig, SinkError
from collector.sinks.influx import InfluxSink, parse_retry_after
from tests.infra.ports import free_port


class Script:
    """Answers to give, in order (the last one repeats), and what was received."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], bytes, float]] = [(204, {}, b"", 0.0)]
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def next(self) -> tuple[int, dict[str, str], bytes, float]:
        with self.lock:
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status, headers, reply, delay = script.next()
            with script.lock:
                script.bodies.append(body)
                script.paths.append(self.path)
            time.sleep(delay)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def _points(n: int) -> list[Point]:
    return [Point("fg_value", (("gateway", "gw-1"), ("source", f"s{i}")),
                  (("value", i / 10), ("unit", "MPa"), ("seq", i)), 1_000_000 + i)
            for i in range(n)]


def _write(url: str, points: list[Point], **kw: Any) -> SinkError:
    sink = InfluxSink(SinkConfig(influx_url=url, token="t0ken", org="o", bucket="b", **kw))
    try:
        with pytest.raises(SinkError) as err:
            sink.write(points)
        return err.value
    finally:
        sink.close()


def test_success_posts_line_protocol_in_chunks(server: tuple[str, Script]) -> None:
    url, script = server
    points = _points(5)
    sink = InfluxSink(SinkConfig(influx_url=url, org="o", bucket="b", max_points_per_write=2))
    sink.write(points)
    sink.write([])  # nothing to do: no request
    sink.close()
    sink.close()
    lines = [to_line(p) for p in points]
    assert script.bodies == ["\n".join(lines[0:2]).encode(), "\n".join(lines[2:4]).encode(),
                             lines[4].encode()]
    assert all(p.startswith("/api/v2/write?") and "precision=ns" in p and "bucket=b" in p
               for p in script.paths)
    with pytest.raises(RuntimeError):
        sink.write(points)


@pytest.mark.parametrize(("status", "headers", "permanent", "retry_after"), [
    (429, {"Retry-After": "7"}, False, 7.0),
    (503, {"Retry-After": "1.5"}, False, 1.5),
    (500, {}, False, None),
    (408, {}, False, None),
    (400, {}, True, None),
    (401, {}, True, None),
    (403, {}, True, None),
    (404, {}, True, None),
    (413, {}, True, None),
    (422, {}, True, None),
])
def test_http_errors(server: tuple[str, Script], status: int, headers: dict[str, str],
                     permanent: bool, retry_after: float | None) -> None:
    url, script = server
    reply = json.dumps({"code": "x", "message": f"reason {status}"}).encode()
    script.answers = [(status, {"Content-Type": "application/json", **headers}, reply, 0.0)]
    err = _write(url, _points(3))
    assert (err.status, err.permanent, err.retry_after_s) == (status, permanent, retry_after)
    assert f"HTTP {status}" in str(err) and f"reason {status}" in str(err)


def test_retry_after_as_http_date(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(503, {"Retry-After": formatdate(time.time() + 30, usegmt=True)}, b"", 0)]
    err = _write(url, _points(1))
    assert err.retry_after_s is not None and 20 < err.retry_after_s <= 31
    assert not err.permanent


def test_a_failed_chunk_fails_the_write_and_stops_it(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(204, {}, b"", 0.0), (503, {}, b"", 0.0), (204, {}, b"", 0.0)]
    err = _write(url, _points(5), max_points_per_write=2)
    assert err.status == 503
    assert len(script.bodies) == 2  # the third chunk was never sent


def test_slow_server_is_a_retryable_timeout(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(204, {}, b"", 3.0)]
    err = _write(url, _points(1), timeout_s=0.5)
    assert not err.permanent and err.status is None


def test_nothing_listening_is_retryable() -> None:
    err = _write(f"http://127.0.0.1:{free_port()}", _points(1))
    assert not err.permanent and err.status is None and err.retry_after_s is None
    assert "cannot reach" in str(err)


def test_unwritable_point_is_permanent_before_any_request(server: tuple[str, Script]) -> None:
    url, script = server
    bad = Point("fg_value", (), (("value", float("nan")),), 1)
    err = _write(url, [*_points(2), bad])
    assert err.permanent and not script.bodies


@pytest.mark.parametrize(("header", "seconds"), [
    ("7", 7.0), (" 3 ", 3.0), ("0.25", 0.25), ("-5", 0.0), ("nan", None), ("inf", None),
    ("soon", None), ("", None), (None, None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0), ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),
])
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = 1445412420.0  # 2015-10-21 07:27:00 UTC
    assert parse_retry_after(header, now) == seconds
