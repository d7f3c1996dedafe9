"""Webhook senders that survive their receivers (issue 14 part 3): garbage answers, short
bodies and dripped bytes cost one attempt; a refused fault delays neither a fire alarm nor
another source; expired and exhausted notifications stop without a last POST; a dead sender
thread is restarted and shows in the status and the metrics.

Misbehaving receivers are raw sockets (no HTTP library answers ``GARBAGE``); the rest is the
real ``Receiver`` of test_notify.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from collector.config import ConfigError, WebhookConfig, parse_config
from collector.metrics import Metrics
from collector.notify import Notifier
from collector.registry import Registry
from collector.status import collect_status
from collector.webhook import MAX_RESPONSE_BYTES

from .conftest import wait_until
from .test_notify import NOW, SECRET, Receiver, note

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
Action = bytes | Callable[[socket.socket], None]


class RawReceiver:
    """A webhook endpoint on a raw socket: the n-th request gets ``script[n]`` (bytes sent as
    they are, then the connection closed; or a function given the socket), every later one
    a plain 200."""

    def __init__(self, script: Sequence[Action]) -> None:
        self.script = list(script)
        self.requests: list[tuple[float, bytes]] = []
        """(time.monotonic() of arrival, body) of each request."""
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            assert found is not None
            while len(body) < int(found.group(1)):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            with self._lock:
                n = len(self.requests)
                self.requests.append((time.monotonic(), body))
            action = self.script[n] if n < len(self.script) else OK
            try:
                if isinstance(action, bytes):
                    conn.sendall(action)
                else:
                    action(conn)
            except OSError:
                pass  # the sender cut the connection: what a deadline does

    def close(self) -> None:
        self.stop.set()
        self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        self._server.close()


def drip(stop: threading.Event) -> Callable[[socket.socket], None]:
    """An answer that never ends: a status line, then one header byte every 50 ms - each
    within any per-read timeout - until the sender gives up."""

    def action(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        while not stop.is_set():
            conn.sendall(b"a")  # raises once the sender has cut the connection
            stop.wait(0.05)

    return action


def webhook(url: str, **kw: Any) -> WebhookConfig:
    settings: dict[str, Any] = {"name": "hook", "url": url, "secret": SECRET,
                                "retry_min_s": 0.05, "retry_max_s": 0.4, **kw}
    return WebhookConfig(**settings)


def sent(n: Notifier) -> int:
    return n.counts().get("hook", {}).get("sent", 0)


# -- receivers that misbehave ---------------------------------------------------------------


@pytest.mark.parametrize(("answer", "error"), [
    (b"GARBAGE\r\n\r\n", "BadStatusLine"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "IncompleteRead"),
])
def test_a_malformed_answer_costs_one_attempt_and_the_sender_lives_on(
        tmp_path: Path, answer: bytes, error: str) -> None:
    r = RawReceiver([answer])
    metrics = Metrics()
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url)], metrics).start()
    try:
        n.enqueue([note("event:gw:1", "fault")])
        wait_until(lambda: sent(n) == 1, "sent on the attempt after the bad answer")
        status = n.status()["hook"]
    finally:
        n.close()
        r.close()
    assert [json.loads(b)["key"] for _, b in r.requests] == ["event:gw:1"] * 2
    assert metrics.notifications.value("hook", "retry") == 1
    assert {lane: v["alive"] for lane, v in status["lanes"].items()} == \
        {"fire": True, "other": True}
    assert status["last_error"].startswith(error)
    assert "\r" not in status["last_error"]  # the receiver's bytes are shown escaped
    assert metrics.webhook_errors.value("hook") == 0  # the receiver's fault, not ours


def test_a_dripping_receiver_is_cut_at_the_attempt_deadline(tmp_path: Path) -> None:
    stop = threading.Event()
    r = RawReceiver([drip(stop)])
    metrics = Metrics()
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url, timeout_s=0.5)], metrics).start()
    try:
        n.enqueue([note("event:gw:1", "fault")])
        wait_until(lambda: metrics.notifications.value("hook", "retry") == 1,
                   "the dripped attempt ended")
        held = time.monotonic() - r.requests[0][0]
        wait_until(lambda: sent(n) == 1, "sent on the next attempt")
        status = n.status()["hook"]
    finally:
        stop.set()
        n.close()
        r.close()
    # The drip never ends by itself: only the deadline ended that attempt (loosely bounded:
    # a loaded machine may run the timer late, never by minutes).
    assert held < 10.0
    assert status["last_error"].startswith("no complete answer within 0.5 s")


def test_only_a_bounded_part_of_the_answer_is_read(tmp_path: Path) -> None:
    def huge(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" +
                     b"x" * (MAX_RESPONSE_BYTES + 1))
        conn.recv(1)  # the rest never comes; wait for the sender to hang up

    r = RawReceiver([huge])
    metrics = Metrics()
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url, timeout_s=60)], metrics).start()
    try:
        n.enqueue([note("event:gw:1", "fault")])
        wait_until(lambda: sent(n) == 1, "sent without reading 100 MB")
    finally:
        n.close()
        r.close()
    assert len(r.requests) == 1 and metrics.notifications.value("hook", "retry") == 0


def test_a_redirect_is_refused_not_followed(tmp_path: Path) -> None:
    r = Receiver(answer=lambda doc: 307)
    metrics = Metrics()
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url)], metrics).start()
    try:
        n.enqueue([note("event:gw:1", "fault")])
        wait_until(lambda: n.counts().get("hook") == {"failed": 1}, "refused")
    finally:
        n.close()
        r.close()
    assert r.sent_keys() == ["event:gw:1"] and metrics.notifications.value("hook", "refused") == 1


# -- lanes and order -------------------------------------------------------------------------


def test_a_fire_alarm_never_waits_behind_a_refused_fault(tmp_path: Path) -> None:
    r = Receiver(answer=lambda doc: 500 if doc["kind"] == "fault" else 200)
    # Production back-off: the refused fault is not tried again for a minute.
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url, retry_min_s=60.0, retry_max_s=300.0)],
                 Metrics()).start()
    try:
        n.enqueue([note("event:gw:1", "fault", source="panel/1-1/42")])
        wait_until(lambda: r.sent_keys() == ["event:gw:1"], "the fault refused")
        # From the same detector, even: the fire lane does not wait for the other one.
        n.enqueue([note("event:gw:2", "fire_alarm", source="panel/1-1/42")])
        wait_until(lambda: "event:gw:2" in r.sent_keys(), "the fire alarm delivered")
        counts = n.counts()["hook"]
    finally:
        n.close()
        r.close()
    assert r.sent_keys() == ["event:gw:1", "event:gw:2"]
    assert counts == {"pending": 1, "sent": 1}
    assert len(r.delivered()) == 2


def test_order_is_kept_per_source_while_other_sources_go_on(tmp_path: Path) -> None:
    accept = threading.Event()
    r = Receiver(answer=lambda doc: 200 if doc["key"] != "event:gw:1" or accept.is_set()
                 else 500)
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url, retry_min_s=0.1, retry_max_s=0.1)],
                 Metrics()).start()
    try:
        n.enqueue([note("event:gw:1", "fault", True, source="A"),
                   note("event:gw:2", "fault", False, source="A"),  # A's "cleared"
                   note("event:gw:3", "fault", True, source="B")])
        wait_until(lambda: r.sent_keys().count("event:gw:1") >= 3 and "event:gw:3" in r.sent_keys(),
                   "A's raise refused again and again, B delivered meanwhile")
        assert "event:gw:2" not in r.sent_keys()  # A's clear waits for A's raise
        accept.set()
        wait_until(lambda: sent(n) == 3, "all delivered")
    finally:
        n.close()
        r.close()
    keys = r.sent_keys()
    a = [k for k in keys if k != "event:gw:3"]
    assert a == ["event:gw:1"] * (len(a) - 1) + ["event:gw:2"]
    assert keys.index("event:gw:3") < keys.index("event:gw:2")


def test_gateway_transitions_are_ordered_per_gateway(tmp_path: Path) -> None:
    accept = threading.Event()
    r = Receiver(answer=lambda doc: 200 if doc["key"] != "offline:gw-1:1" or accept.is_set()
                 else 503)
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url, retry_min_s=0.1, retry_max_s=0.1,
                                                 events=frozenset({"gateway_offline",
                                                                   "gateway_online"}))],
                 Metrics()).start()
    try:
        n.enqueue([note("offline:gw-1:1", "gateway_offline", source=None, gateway="gw-1"),
                   note("online:gw-1:1", "gateway_online", source=None, gateway="gw-1"),
                   note("offline:gw-2:1", "gateway_offline", source=None, gateway="gw-2")])
        wait_until(lambda: r.sent_keys().count("offline:gw-1:1") >= 2 and
                   "offline:gw-2:1" in r.sent_keys(), "gw-1 refused, gw-2 delivered")
        assert "online:gw-1:1" not in r.sent_keys()
        accept.set()
        wait_until(lambda: sent(n) == 3, "all delivered")
    finally:
        n.close()
        r.close()
    keys = r.sent_keys()
    assert keys.index("offline:gw-2:1") < keys.index("online:gw-1:1")
    assert keys[-1] == "online:gw-1:1"


def test_an_outbox_of_the_previous_version_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE outbox (id INTEGER PRIMARY KEY, webhook TEXT NOT NULL, key TEXT NOT NULL,
            kind TEXT NOT NULL, body BLOB NOT NULL, created_ms INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending', last_error TEXT, done_ms INTEGER,
            UNIQUE (webhook, key));
        CREATE INDEX outbox_pending ON outbox (webhook, state, id);""")
    now = time.time_ns() // 1_000_000
    for key, kind, source in (("event:gw:1", "fault", "A"), ("event:gw:2", "fire_alarm", "A"),
                              ("event:gw:3", "fault", "B")):
        body = json.dumps({"key": key, "kind": kind, "gateway": "gw", "source": {"id": source}})
        old.execute("INSERT INTO outbox (webhook, key, kind, body, created_ms, next_ms) "
                    "VALUES ('hook', ?, ?, ?, ?, ?)", (key, kind, body.encode(), now, now))
    old.commit()
    old.close()
    r = Receiver(answer=lambda doc: 500 if doc["key"] == "event:gw:1" else 200)
    n = Notifier(path, [webhook(r.url, retry_min_s=60.0, retry_max_s=300.0)],
                 Metrics()).start()
    try:
        wait_until(lambda: sent(n) == 2, "the rows behind the refused one delivered")
    finally:
        n.close()
        r.close()
    assert sorted(r.sent_keys()) == ["event:gw:1", "event:gw:2", "event:gw:3"]
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT key, order_key, lane FROM outbox ORDER BY id").fetchall()
    finally:
        db.close()
    assert rows == [("event:gw:1", "gw/A", "other"), ("event:gw:2", "gw/A", "fire"),
                    ("event:gw:3", "gw/B", "other")]


# -- giving up ------------------------------------------------------------------------------


def test_an_expired_notification_fails_without_a_post(tmp_path: Path) -> None:
    clock = [NOW]
    r = Receiver()
    metrics = Metrics()
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url, give_up_after_s=60.0)], metrics,
                 clock=lambda: clock[0])
    n.enqueue([note("event:gw:1", "fault")])
    clock[0] += 61_000  # the collector was down for a minute
    n.start()
    try:
        n.enqueue([note("event:gw:2", "fault")])
        wait_until(lambda: n.counts().get("hook") == {"failed": 1, "sent": 1}, "handled")
        status = n.status()["hook"]
    finally:
        n.close()
        r.close()
    assert r.sent_keys() == ["event:gw:2"]  # the receiver never saw the expired one
    assert metrics.notifications.value("hook", "gave_up") == 1
    assert "give_up_after_s" in status["last_error"]


def test_a_notification_in_back_off_fails_at_its_give_up_time(tmp_path: Path) -> None:
    r = Receiver(answer=lambda doc: 503)
    metrics = Metrics()
    n = Notifier(tmp_path / "n.sqlite",
                 [webhook(r.url, retry_min_s=60.0, retry_max_s=60.0, give_up_after_s=0.5)],
                 metrics).start()
    try:
        n.enqueue([note("event:gw:1", "fault")])
        wait_until(lambda: n.counts().get("hook") == {"failed": 1}, "given up")
    finally:
        n.close()
        r.close()
    # Failed when its time was up, not a minute later after one more POST.
    assert r.sent_keys() == ["event:gw:1"]
    assert metrics.notifications.value("hook", "gave_up") == 1


def test_attempts_are_capped(tmp_path: Path) -> None:
    r = Receiver(answer=lambda doc: 503)
    metrics = Metrics()
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url, retry_min_s=0.01, max_attempts=3)],
                 metrics).start()
    try:
        n.enqueue([note("event:gw:1", "fault")])
        wait_until(lambda: n.counts().get("hook") == {"failed": 1}, "exhausted")
    finally:
        n.close()
        r.close()
    assert r.sent_keys() == ["event:gw:1"] * 3
    assert metrics.notifications.value("hook", "retry") == 3
    assert metrics.notifications.value("hook", "exhausted") == 1


def test_max_attempts_is_configured_per_webhook() -> None:
    hook = {"url": "http://h:8080/x", "secret": SECRET}
    assert parse_config({"webhook": [hook]}).webhooks[0].max_attempts == 100
    assert parse_config({"webhook": [{**hook, "max_attempts": 5}]}).webhooks[0].max_attempts \
        == 5
    with pytest.raises(ConfigError) as e:
        parse_config({"webhook": [{**hook, "max_attempts": 0}]})
    assert str(e.value) == "webhook[0].max_attempts: must be at least 1, got 0"
    with pytest.raises(ConfigError) as e:
        parse_config({"webhook": [{**hook, "url": "http://h:99999/x"}]})
    assert str(e.value) == "webhook[0].url: bad port in 'http://h:99999/x'"


# -- a sender that dies anyway --------------------------------------------------------------


KILLS = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
"""The killed thread's SystemExit is reported by pytest's thread hook: expected here."""


def kill(name: str) -> threading.Thread:
    """End thread ``name`` the way nothing in its loop can catch: an asynchronous SystemExit
    (delivered when it next runs Python code, at the latest after its wait)."""
    thread = next(t for t in threading.enumerate() if t.name == name)
    assert thread.ident is not None
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                      ctypes.py_object(SystemExit))
    assert done == 1
    wait_until(lambda: not thread.is_alive(), f"{name} dead")
    return thread


def sender_up(metrics: Metrics, lane: str) -> str:
    found = re.search(rf'^firegate_collector_webhook_sender_up{{webhook="hook",lane="{lane}"}} '
                      r"(\S+)$", metrics.render(), re.M)
    assert found is not None
    return found.group(1)


@KILLS
def test_a_dead_sender_shows_and_is_restarted(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    r = Receiver()
    metrics = Metrics()
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url)], metrics, watchdog_s=None).start()
    try:
        assert (sender_up(metrics, "fire"), sender_up(metrics, "other")) == ("1", "1")
        kill("webhook-hook-other")
        n.enqueue([note("event:gw:1", "fault")])  # queued while nobody sends it
        dead = n.status()
        assert {lane: v["alive"] for lane, v in dead["hook"]["lanes"].items()} == \
            {"fire": True, "other": False}
        assert (sender_up(metrics, "fire"), sender_up(metrics, "other")) == ("1", "0")
        assert n.supervise() == 1
        wait_until(lambda: r.sent_keys() == ["event:gw:1"], "delivered by the restarted sender")
        alive = n.status()["hook"]["lanes"]["other"]
    finally:
        n.close()
        r.close()
    assert alive["alive"] and alive["restarts"] == 1
    assert metrics.webhook_restarts.value("hook", "other") == 1
    assert metrics.webhook_restarts.value("hook", "fire") == 0

    # What `firegate collector status` makes of a running collector's snapshot with it.
    from firegate.cli.collector import render_status

    cfg = parse_config({"collector": {"state_dir": str(tmp_path / "state")}})
    cfg.state_dir.mkdir()
    registry = Registry(cfg.registry_path)
    registry.save_snapshot(cfg.collector_id, time.time_ns() // 1_000_000,
                           {"running": True, "pid": os.getpid(), "webhooks": dead})
    registry.close()
    data = collect_status([cfg])
    (row,) = data["webhooks"]
    assert row["lanes"] == {"fire": "up", "other": "dead"} and row["pending"] == 1
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    render_status(data)
    out = capsys.readouterr().out
    assert re.search(r"other \x1b\[1;31mdead", out), out  # bold red
    assert re.search(r"fire \x1b\[32mup", out), out


@KILLS
def test_the_watchdog_restarts_a_dead_sender_by_itself(tmp_path: Path) -> None:
    r = Receiver()
    metrics = Metrics()
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url)], metrics, watchdog_s=0.05).start()
    try:
        kill("webhook-hook-fire")
        wait_until(lambda: metrics.webhook_restarts.value("hook", "fire") == 1, "restarted")
        n.enqueue([note("event:gw:1", "fire_alarm")])
        wait_until(lambda: sent(n) == 1, "delivered")
        lanes = n.status()["hook"]["lanes"]
    finally:
        n.close()
        r.close()
    assert lanes["fire"]["alive"] and lanes["fire"]["restarts"] == 1
    assert r.delivered()[0]["key"] == "event:gw:1"


def test_an_exception_in_a_sender_is_counted_logged_once_and_survived(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="firegate.collector.notify")
    path = tmp_path / "n.sqlite"
    r = Receiver()
    metrics = Metrics()
    n = Notifier(path, [webhook(r.url, retry_min_s=0.01, max_attempts=3)], metrics)
    # A row that enqueue never writes (a text body, as from a damaged file): signing it
    # raises TypeError inside the sender, on every attempt.
    db = sqlite3.connect(path)
    now = time.time_ns() // 1_000_000
    db.execute("INSERT INTO outbox (webhook, key, kind, body, created_ms, next_ms, order_key, "
               "lane) VALUES ('hook', 'event:gw:1', 'fault', 'not bytes', ?, ?, 'gw/A', "
               "'other')", (now, now))
    db.commit()
    db.close()
    n.start()
    try:
        n.enqueue([note("event:gw:2", "fault", source="B")])
        wait_until(lambda: n.counts().get("hook") == {"failed": 1, "sent": 1}, "handled")
        status = n.status()["hook"]
    finally:
        n.close()
        r.close()
    assert r.sent_keys() == ["event:gw:2"]
    assert metrics.webhook_errors.value("hook") == 3 and status["errors"] == 3
    assert metrics.notifications.value("hook", "exhausted") == 1
    assert all(v["alive"] for v in status["lanes"].values())
    logged = [rec for rec in caplog.records if rec.exc_info is not None]
    assert len(logged) == 1  # once, with its traceback, though it happened three times
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is TypeError


def test_sent_notifications_are_forgotten_after_a_week(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue keeps what is pending and a week of history: the watchdog prunes (issue 14,
    bounds), not only a restart."""
    from collector import notify

    now = [NOW]
    r = Receiver()
    n = Notifier(tmp_path / "n.sqlite", [webhook(r.url)], Metrics(), clock=lambda: now[0],
                 watchdog_s=0.05).start()
    try:
        n.enqueue([note("event:gw:1", "fault")])
        wait_until(lambda: sent(n) == 1, "delivered")
        monkeypatch.setattr(notify, "PRUNE_EVERY_S", 0.0)
        now[0] += notify.KEEP_SENT_MS + 1
        wait_until(lambda: sent(n) == 0, "forgotten by the watchdog")
    finally:
        n.close()
        r.close()
