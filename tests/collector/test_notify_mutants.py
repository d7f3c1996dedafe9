"""collector/notify.py at unit level, for the mutation run (issue 19): the no-loss paths of the
webhook queue. A real SQLite queue file, a real HTTP receiver on a free loopback port; the
lanes are stepped by the test (``Notifier._step``) with a manual clock, so back-off, Retry-After
and give-up are checked to the millisecond without waiting for them."""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import collector.notify
from collector.config import WebhookConfig
from collector.metrics import Metrics
from collector.notify import (
    HEADS_PER_STEP,
    KEEP_SENT_MS,
    MAX_WAIT_S,
    Notification,
    Notifier,
    event_body,
    gateway_body,
    lane_of,
    order_key,
)
from protocols.wire import Bus, Event, EventType, Source

from .conftest import wait_until

SECRET = "mutation-secret-0123456789abcdef0123456789"
NOW = 1_718_000_000_000


class Receiver:
    """A webhook endpoint: answers each delivery key from its script (status, headers), 200
    when the script is empty; records every request in arrival order."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.hold: threading.Event | None = None
        """When set to an event: each answer waits for it (a POST kept under way)."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = dict(self.headers.items())
                with owner.lock:
                    owner.requests.append((headers, body))
                    todo = owner.script.get(headers.get("X-Firegate-Delivery", ""), [])
                    status, extra = todo.pop(0) if todo else (200, {})
                    hold = owner.hold
                if hold is not None:
                    hold.wait(10.0)
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)  # quick to stop: 50 ms, not 500
        self.thread.start()

    def delivered(self) -> list[str]:
        with self.lock:
            return [h["X-Firegate-Delivery"] for h, _ in self.requests]

    def answer(self, key: str, *answers: int | tuple[int, dict[str, str]]) -> None:
        with self.lock:
            self.script[key] = [a if isinstance(a, tuple) else (a, {}) for a in answers]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Clock:
    def __init__(self) -> None:
        self.ms = NOW

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def hook(url: str, name: str = "h", **kw: object) -> WebhookConfig:
    args: dict[str, object] = {"retry_min_s": 1.0, "retry_max_s": 5.0,
                               "give_up_after_s": 100.0, "max_attempts": 10, "timeout_s": 5.0}
    args.update(kw)
    return WebhookConfig(name=name, url=url, secret=SECRET, **args)  # type: ignore[arg-type]


def note(key: str, kind: str = "fault", source: str | None = "s1", gateway: str | None = "gw",
         active: bool = True, fire: bool = False) -> Notification:
    return Notification(kind=kind, key=key, body=b'{"key":"%s"}' % key.encode(),
                        active=active, gateway=gateway, source=source, fire=fire)


class Queue:
    """A Notifier without threads: the test steps its lanes."""

    def __init__(self, path: Path, hooks: list[WebhookConfig], now: int = NOW) -> None:
        self.clock = Clock()
        self.clock.ms = now
        self.metrics = Metrics()
        self.path = path
        self.n = Notifier(path, hooks, self.metrics, clock=self.clock, watchdog_s=None)

    def step(self, lane: str = "other", name: str = "h") -> float:
        return self.n._step(self.n._lanes[name, lane])

    def rows(self) -> dict[str, tuple[Any, ...]]:
        """key -> (state, attempts, next_ms, last_error, done_ms, order_key, lane, created_ms),
        read by a connection of its own (what a restarted collector would find)."""
        db = sqlite3.connect(self.path)
        try:
            return {r[0]: tuple(r[1:]) for r in db.execute(
                "SELECT key, state, attempts, next_ms, last_error, done_ms, order_key, lane, "
                "created_ms FROM outbox ORDER BY id")}
        finally:
            db.close()

    def counted(self, outcome: str, name: str = "h") -> float:
        return self.metrics.notifications.value(name, outcome)


@pytest.fixture
def q(tmp_path: Path, receiver: Receiver) -> Iterator[Queue]:
    queue = Queue(tmp_path / "notify.db", [hook(receiver.url)])
    yield queue
    queue.n.close()


# -- queued durably, once --------------------------------------------------------------------

def test_enqueue_is_on_disk_on_return_and_a_key_is_queued_once(tmp_path: Path,
                                                                receiver: Receiver) -> None:
    q = Queue(tmp_path / "n.db", [hook(receiver.url, "a"), hook(receiver.url, "b",
                                                                 events=frozenset({"fire_alarm"}))])
    try:
        assert q.n.enqueue([note("k1"), note("f1", kind="fire_alarm")]) == 3
        rows = q.rows()
        assert len(rows) == 2  # keys: k1 (a), f1 (a and b)
        db = sqlite3.connect(q.path)
        got = sorted(db.execute("SELECT webhook, key, kind, created_ms, next_ms, order_key, lane,"
                                " state, attempts FROM outbox"))
        db.close()
        assert got == [("a", "f1", "fire_alarm", NOW, NOW, "gw/s1", "fire", "pending", 0),
                       ("a", "k1", "fault", NOW, NOW, "gw/s1", "other", "pending", 0),
                       ("b", "f1", "fire_alarm", NOW, NOW, "gw/s1", "fire", "pending", 0)]
        assert q.n.enqueue([note("k1"), note("f1", kind="fire_alarm")]) == 0
        assert q.n.enqueue([note("k1"), note("k2")]) == 1
        assert q.n.enqueue([note("x", kind="nobody-takes-this")]) == 0
        assert q.n.enqueue([]) == 0
        assert q.n.pending() == 4
        assert q.n.counts() == {"a": {"pending": 3}, "b": {"pending": 1}}
    finally:
        q.n.close()
    # after close the last counts stay readable; a new Notifier on the file finds every row
    assert q.n.counts() == {"a": {"pending": 3}, "b": {"pending": 1}}
    again = Queue(tmp_path / "n.db", [hook(receiver.url, "a")])
    try:
        assert again.n.pending() == 4
    finally:
        again.n.close()


def test_filters_addressing_and_restores(q: Queue, receiver: Receiver, tmp_path: Path) -> None:
    hooks = [hook(receiver.url, "quiet", restores=False), hook(receiver.url, "all")]
    q2 = Queue(tmp_path / "f.db", hooks)
    try:
        assert q2.n.wants("fault", False)
        assert not q2.n.wants("nobody-takes-this", True)
        only_quiet = Queue(tmp_path / "g.db", [hooks[0]])
        try:
            assert only_quiet.n.wants("fault", True)
            assert not only_quiet.n.wants("fault", False)
        finally:
            only_quiet.n.close()
        assert q2.n.enqueue([note("c1", active=False)]) == 1  # "all" only
        addressed = Notification(kind="nobody-takes-this", key="esc", body=b"{}",
                                 webhooks=("quiet",))
        assert q2.n.enqueue([addressed]) == 1
        assert q2.n.counts() == {"all": {"pending": 1}, "quiet": {"pending": 1}}
    finally:
        q2.n.close()


def test_lanes_and_order_keys() -> None:
    assert lane_of("fire_alarm") == "fire"
    assert lane_of("fault") == "other"
    assert note("e", fire=True).lane == "fire"
    assert note("e").lane == "other"
    assert order_key(None, "s", "k:1") == "k:1"
    assert order_key("gw", None, "k:1") == "gw"
    assert order_key("gw", "s", "k:1") == "gw/s"
    assert note("k", gateway="g", source="x").order_key == "g/x"


# -- delivered ---------------------------------------------------------------------------------

def test_a_delivery_is_signed_and_marked_sent(q: Queue, receiver: Receiver) -> None:
    assert q.step() == MAX_WAIT_S  # nothing queued
    q.n.enqueue([note("k1")])
    q.clock.ms = NOW + 7
    assert q.step() == 0.0
    assert receiver.delivered() == ["k1"]
    headers, body = receiver.requests[0]
    assert body == b'{"key":"k1"}'
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["X-Firegate-Event"] == "fault"
    t, mac = (p.split("=", 1)[1] for p in headers["X-Firegate-Signature"].split(","))
    assert mac == hmac.new(SECRET.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert q.rows()["k1"][:5] == ("sent", 1, NOW, None, NOW + 7)
    assert q.counted("sent") == 1
    assert q.step() == MAX_WAIT_S
    assert receiver.delivered() == ["k1"]
    assert q.n.pending() == 0  # a webhook with sent rows only has none pending


def test_a_delivery_after_retries_clears_the_error(q: Queue, receiver: Receiver) -> None:
    receiver.answer("k1", 503)
    q.n.enqueue([note("k1")])
    q.step()
    assert q.rows()["k1"][3] is not None
    q.clock.ms = NOW + 1000
    q.step()
    assert q.rows()["k1"][:5] == ("sent", 2, NOW + 1000, None, NOW + 1000)
    assert q.counted("retry") == 1
    assert q.counted("sent") == 1


# -- retries, back-off, Retry-After -----------------------------------------------------------

def test_back_off_doubles_from_retry_min_up_to_retry_max(q: Queue, receiver: Receiver) -> None:
    receiver.answer("k1", *[500] * 6)
    q.n.enqueue([note("k1")])
    waits = []
    for attempt in range(1, 7):
        q.step()
        state, attempts, next_ms, error, *_ = q.rows()["k1"]
        assert (state, attempts) == ("pending", attempt)
        assert error == "HTTP 500"
        waits.append(next_ms - q.clock.ms)
        # not due one ms before: no POST, and the lane says how long to wait
        q.clock.ms = next_ms - 1
        assert q.step() == pytest.approx(0.001)
        assert len(receiver.delivered()) == attempt
        q.clock.ms = next_ms
    assert waits == [1000, 2000, 4000, 5000, 5000, 5000]
    assert q.counted("retry") == 6
    q.step()
    assert q.rows()["k1"][0] == "sent"


@pytest.mark.parametrize(("retry_after", "expected_ms"), [
    ("3", 3000),     # longer than the back-off (1 s): honoured
    ("0", 1000),     # shorter: the back-off stays
    ("60", 5000),    # longer than retry_max_s: capped
], ids=["longer", "shorter", "capped"])
def test_retry_after_is_honoured_within_retry_max(q: Queue, receiver: Receiver,
                                                 retry_after: str, expected_ms: int) -> None:
    receiver.answer("k1", (429, {"Retry-After": retry_after}))
    q.n.enqueue([note("k1")])
    q.step()
    assert q.rows()["k1"][:3] == ("pending", 1, NOW + expected_ms)


def test_a_retry_never_waits_past_the_give_up_time(tmp_path: Path, receiver: Receiver) -> None:
    q = Queue(tmp_path / "n.db", [hook(receiver.url, give_up_after_s=2.5, retry_max_s=60.0)])
    try:
        receiver.answer("k1", 500, 500, 500)
        q.n.enqueue([note("k1")])
        q.step()
        assert q.rows()["k1"][2] == NOW + 1000
        q.clock.ms = NOW + 1000
        q.step()
        assert q.rows()["k1"][2] == NOW + 2500  # 2 s back-off, capped at the give-up time
        assert q.rows()["k1"][:2] == ("pending", 2)
        q.clock.ms = NOW + 2499  # not due yet: the lane waits to the give-up time
        assert q.step() == pytest.approx(0.001)
        # at the give-up time: failed without a POST, counted gave_up, the last error kept
        q.clock.ms = NOW + 2500
        q.step()
        assert len(receiver.delivered()) == 2
        state, attempts, _, error, done_ms, *_ = q.rows()["k1"]
        assert (state, attempts, done_ms) == ("failed", 2, NOW + 2500)
        assert error == "not delivered within give_up_after_s (2.5 s); last error: HTTP 500"
        assert q.counted("gave_up") == 1
        assert q.counted("exhausted") == 0
        assert q.n.status()["h"]["failed"] == 1
        assert str(q.n.status()["h"]["last_error"]).startswith("k1: not delivered")
    finally:
        q.n.close()


def test_gave_up_without_any_attempt_has_no_last_error(tmp_path: Path,
                                                       receiver: Receiver) -> None:
    q = Queue(tmp_path / "n.db", [hook(receiver.url, give_up_after_s=1.0)])
    try:
        q.n.enqueue([note("k1")])
        q.clock.ms = NOW + 1000
        q.step()
        assert receiver.delivered() == []
        assert q.rows()["k1"][:4] == ("failed", 0, NOW, "not delivered within "
                                      "give_up_after_s (1 s)")
        assert q.counted("gave_up") == 1
    finally:
        q.n.close()


def test_exhausted_after_max_attempts(tmp_path: Path, receiver: Receiver) -> None:
    q = Queue(tmp_path / "n.db", [hook(receiver.url, max_attempts=2)])
    try:
        receiver.answer("k1", 500, 500)
        q.n.enqueue([note("k1")])
        q.step()
        assert q.rows()["k1"][:2] == ("pending", 1)
        q.clock.ms = NOW + 1000
        q.step()
        state, attempts, _, error, done_ms, *_ = q.rows()["k1"]
        assert (state, attempts, done_ms) == ("failed", 2, NOW + 1000)
        assert error == "max_attempts (2) reached; last error: HTTP 500"
        assert q.counted("exhausted") == 1
        assert q.counted("retry") == 2
        assert len(receiver.delivered()) == 2
    finally:
        q.n.close()


def test_a_row_tried_max_attempts_before_a_restart_is_not_posted_again(
        tmp_path: Path, receiver: Receiver) -> None:
    first = Queue(tmp_path / "n.db", [hook(receiver.url, max_attempts=5)])
    receiver.answer("k1", 500, 500)
    first.n.enqueue([note("k1"), note("k2", source="s2")])
    first.step()
    first.clock.ms = NOW + 1000
    first.step()
    first.n.close()
    assert first.rows()["k1"][:2] == ("pending", 2)
    second = Queue(tmp_path / "n.db", [hook(receiver.url, max_attempts=2)])
    try:
        second.clock.ms = NOW + 3000
        second.step()
        assert receiver.delivered() == ["k1", "k2", "k1"]
        state, attempts, _, error, *_ = second.rows()["k1"]
        assert (state, attempts) == ("failed", 2)
        assert error == "max_attempts (2) reached; last error: HTTP 500"
        assert second.counted("exhausted") == 1
    finally:
        second.n.close()


def test_exhausted_before_any_attempt_has_no_last_error(tmp_path: Path,
                                                        receiver: Receiver) -> None:
    q = Queue(tmp_path / "n.db", [hook(receiver.url, max_attempts=0)])
    try:
        q.n.enqueue([note("k1")])
        q.step()
        assert receiver.delivered() == []
        assert q.rows()["k1"][:4] == ("failed", 0, NOW, "max_attempts (0) reached")
        assert q.counted("exhausted") == 1
    finally:
        q.n.close()


def test_a_refusal_fails_at_once_and_is_counted_once(q: Queue, receiver: Receiver,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    receiver.answer("k1", 404)
    q.n.enqueue([note("k1")])
    q.step()
    state, attempts, _, error, done_ms, *_ = q.rows()["k1"]
    assert (state, attempts, done_ms) == ("failed", 1, NOW)
    assert error == "HTTP 404"
    assert q.counted("refused") == 1
    assert sum(q.metrics.notifications.values().values()) == 1
    assert q.n.status()["h"]["last_error"] == f"k1: {error}"
    assert "webhook h: k1 failed for good after 1 attempts: HTTP 404" in caplog.messages


# -- order per source, lanes --------------------------------------------------------------------

def test_a_cleared_never_overtakes_its_raised_and_others_go_on(q: Queue,
                                                               receiver: Receiver) -> None:
    receiver.answer("raised", 500)
    q.n.enqueue([note("raised", source="s1"), note("cleared", source="s1", active=False),
                 note("other", source="s2")])
    q.step()
    assert receiver.delivered() == ["raised", "other"]  # the refused source holds only itself
    rows = q.rows()
    assert rows["cleared"][:2] == ("pending", 0)
    assert rows["other"][0] == "sent"
    # while raised waits, the lane waits for it, and cleared stays behind it
    assert q.step() == pytest.approx(1.0)
    assert receiver.delivered() == ["raised", "other"]
    q.clock.ms = NOW + 1000
    q.step()
    assert receiver.delivered() == ["raised", "other", "raised"]
    q.step()
    assert receiver.delivered() == ["raised", "other", "raised", "cleared"]


def test_due_heads_go_oldest_first_and_the_soonest_is_waited_for(q: Queue,
                                                                   receiver: Receiver) -> None:
    receiver.answer("a", (503, {"Retry-After": "4"}))
    receiver.answer("b", 503)
    q.n.enqueue([note("a", source="sa"), note("b", source="sb")])
    q.step()
    assert [r[2] for r in q.rows().values()] == [NOW + 4000, NOW + 1000]
    assert q.step() == pytest.approx(1.0)  # the sooner of the two, not the older
    q.n.enqueue([note("c", source="sc"), note("d", source="sd")])
    # c and d due, a and b not: the step sends c and d and stops at the first not due
    assert q.step() == 0.0
    assert receiver.delivered() == ["a", "b", "c", "d"]
    q.n.enqueue([note("c2", source="sc"), note("d2", source="sd")])  # behind sent c and d
    q.clock.ms = NOW + 4000  # a, b, c2, d2 due: in the order queued
    q.step()
    assert receiver.delivered() == ["a", "b", "c", "d", "a", "b", "c2", "d2"]


def test_a_step_takes_at_most_heads_per_step(q: Queue, receiver: Receiver) -> None:
    q.n.enqueue([note(f"k{i}", source=f"s{i}") for i in range(HEADS_PER_STEP + 3)])
    q.step()
    assert len(receiver.delivered()) == HEADS_PER_STEP
    assert q.n.counts()["h"] == {"sent": HEADS_PER_STEP, "pending": 3}
    q.step()
    assert q.n.counts()["h"] == {"sent": HEADS_PER_STEP + 3}


def test_the_fire_lane_is_its_own(q: Queue, receiver: Receiver) -> None:
    receiver.answer("fault", 500)
    q.n.enqueue([note("fault", source="s1"), note("fire", kind="fire_alarm", source="s1"),
                 note("esc", kind="fault", source="s1", fire=True)])
    assert q.step("fire") == 0.0
    assert receiver.delivered() == ["fire"]
    q.step("fire")
    assert receiver.delivered() == ["fire", "esc"]
    q.step("other")
    assert receiver.delivered() == ["fire", "esc", "fault"]
    assert q.rows()["fault"][0] == "pending"


def test_an_unexpected_error_is_a_counted_retry(q: Queue, receiver: Receiver,
                                               caplog: pytest.LogCaptureFixture) -> None:
    # a row whose body was stored as text (a fault of the stored row, not of the receiver):
    # signing it raises; the attempt is a retry, backs off like one and is counted as a fault
    db = sqlite3.connect(q.path)
    db.execute("INSERT INTO outbox (webhook, key, kind, body, created_ms, next_ms, order_key, "
               "lane) VALUES ('h', 'bad', 'fault', 'text', ?, ?, 'gw/s9', 'other')", (NOW, NOW))
    db.commit()
    db.close()
    q.n.enqueue([note("good", source="s1")])
    q.step()
    assert receiver.delivered() == ["good"]  # the bad row holds nothing else up
    state, attempts, next_ms, error, *_ = q.rows()["bad"]
    assert (state, attempts, next_ms) == ("pending", 1, NOW + 1000)
    assert str(error).startswith("TypeError: ")
    assert q.counted("retry") == 1
    assert q.metrics.webhook_errors.value("h") == 1
    assert q.n.status()["h"]["errors"] == 1
    # the same fault again: counted, its back-off doubled, logged once
    q.clock.ms = NOW + 1000
    q.step()
    assert q.rows()["bad"][1:3] == (2, NOW + 3000)
    assert q.metrics.webhook_errors.value("h") == 2
    logged = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].getMessage() == ("webhook h (other lane): unexpected error, counted and "
                                      "retried (repeats are not logged)")
    assert logged[0].exc_info is not None


# -- the threads, the history -------------------------------------------------------------------

def test_started_lanes_deliver_and_close_keeps_counts(tmp_path: Path,
                                                     receiver: Receiver) -> None:
    n = Notifier(tmp_path / "n.db", [hook(receiver.url)], Metrics(), watchdog_s=0.05)
    n.start()
    try:
        n.enqueue([note("k1"), note("f1", kind="fire_alarm")])
        # 10 s: inside the mutation run's 15 s per test, so a lane that never starts fails here
        wait_until(lambda: n.counts().get("h") == {"sent": 2}, "both lanes delivered", 10.0)
        status = n.status()["h"]
        assert status["lanes"]["fire"]["alive"] and status["lanes"]["other"]["alive"]
        assert n.supervise() == 0
    finally:
        n.close()
    assert sorted(receiver.delivered()) == ["f1", "k1"]
    assert n.counts() == {"h": {"sent": 2}}


def test_history_older_than_a_week_is_forgotten_pending_never(tmp_path: Path,
                                                              receiver: Receiver) -> None:
    q = Queue(tmp_path / "n.db", [hook(receiver.url)])
    q.n.enqueue([note("old"), note("young", source="s2"), note("waiting", source="s3")])
    receiver.answer("waiting", 500)
    q.clock.ms = NOW + 1
    q.step()
    db = sqlite3.connect(q.path)
    db.execute("UPDATE outbox SET done_ms = ? WHERE key = 'young'", (NOW + 2,))
    db.commit()
    db.close()
    q.n.close()
    assert sorted(q.rows()) == ["old", "waiting", "young"]
    # opened a week after: what was done before the cut goes, what was done at it stays
    later = Queue(tmp_path / "n.db", [hook(receiver.url)], now=NOW + 2 + KEEP_SENT_MS)
    later.n.close()
    assert sorted(later.rows()) == ["waiting", "young"]


def test_an_older_queue_gets_order_keys_and_lanes_from_its_bodies(tmp_path: Path,
                                                                   receiver: Receiver) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, webhook TEXT NOT NULL, key TEXT NOT "
               "NULL, kind TEXT NOT NULL, body BLOB NOT NULL, created_ms INTEGER NOT NULL, "
               "attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL, state TEXT NOT "
               "NULL DEFAULT 'pending', last_error TEXT, done_ms INTEGER, UNIQUE (webhook, key))")
    old = [("raised", "fire_alarm", b'{"gateway":"gw","source":{"id":"loop1/3"}}'),
           ("offline", "gateway_offline", b'{"gateway":"gw"}'),
           ("garbage", "fault", b"not json"),
           ("a-list", "fault", b"[1, 2]"),
           ("odd-source", "fault", b'{"gateway":"gw","source":"loop1/4"}'),
           ("no-gateway", "fault", b'{"source":{"id":"x"}}')]
    db.executemany("INSERT INTO outbox (webhook, key, kind, body, created_ms, next_ms) "
                   "VALUES ('h', ?, ?, ?, ?, ?)", [(*o, NOW, NOW) for o in old])
    db.commit()
    db.close()
    q = Queue(path, [hook(receiver.url)])
    try:
        got = {k: (r[5], r[6]) for k, r in q.rows().items()}
        assert got == {"raised": ("gw/loop1/3", "fire"), "offline": ("gw", "other"),
                       "garbage": ("garbage", "other"), "a-list": ("a-list", "other"),
                       "odd-source": ("odd-source", "other"),
                       "no-gateway": ("no-gateway", "other")}
        db = sqlite3.connect(path)
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'outbox_heads'"
                          ).fetchone() == (1,)
        db.close()
        # a cleared queued after the migration stays behind its raised
        receiver.answer("raised", 500)
        q.n.enqueue([note("cleared", kind="fire_alarm", gateway="gw", source="loop1/3",
                          active=False)])
        q.step("fire")
        assert receiver.delivered() == ["raised"]
    finally:
        q.n.close()
    # opened again: nothing to migrate, nothing changed
    again = Queue(path, [hook(receiver.url)])
    again.n.close()
    assert {k: (r[5], r[6]) for k, r in again.rows().items()}["raised"] == ("gw/loop1/3", "fire")


def test_bodies_are_exact_and_deterministic() -> None:
    """The bodies carry the delivery key and are what a receiver parses: byte-exact (written
    here from what the code produced and read field by field against docs/collector.md)."""
    full = Event(source=Source("loop1/3", Bus.GB26875, description="Hall 键"),
                 type=EventType.THRESHOLD_HIGH, receive_ms=5, seq=7, source_ms=4, value=1.5,
                 limit=1.2, detail="d", state=2)
    assert event_body("gw", "site", full, colour="red") == (
        '{"v":1,"kind":"threshold_high","active":true,"key":"event:gw:7","gateway":"gw",'
        '"site":"site","seq":7,"priority":1,"time_ms":5,"source_ms":4,"source":{"id":"loop1/3",'
        '"bus":"gb26875","desc":"Hall 键"},"value":1.5,"limit":1.2,"detail":"d","state":2,'
        '"risk":"red"}').encode()
    bare = Event(source=Source("loop1/3", Bus.GB26875), type=EventType.FIRE_ALARM,
                 receive_ms=5, seq=7)
    assert event_body("gw", None, bare) == (
        b'{"v":1,"kind":"fire_alarm","active":true,"key":"event:gw:7","gateway":"gw",'
        b'"site":null,"seq":7,"priority":0,"time_ms":5,"source_ms":null,'
        b'"source":{"id":"loop1/3","bus":"gb26875"}}')
    assert gateway_body("gw", "s", "gateway_offline", "k", 9, "r") == (
        b'{"v":1,"kind":"gateway_offline","active":true,"key":"k","gateway":"gw","site":"s",'
        b'"time_ms":9,"reason":"r"}')
    assert gateway_body("gw", "s", "gateway_online", "k", 9, None) == (
        b'{"v":1,"kind":"gateway_online","active":false,"key":"k","gateway":"gw","site":"s",'
        b'"time_ms":9,"reason":null}')
    assert gateway_body("gw", "s", "records_missing", "k", 9, None, active=True) == (
        b'{"v":1,"kind":"records_missing","active":true,"key":"k","gateway":"gw","site":"s",'
        b'"time_ms":9,"reason":null}')


def test_a_dead_lane_thread_is_restarted_and_delivers(tmp_path: Path,
                                                     receiver: Receiver) -> None:
    metrics = Metrics()
    n = Notifier(tmp_path / "n.db", [hook(receiver.url)], metrics, watchdog_s=None)
    assert n.supervise() == 0  # not started: nothing to restart
    n.start()
    try:
        lane = n._lanes["h", "other"]
        old = lane.thread
        # a thread that has ended stands for a lane thread that died
        dead = threading.Thread(target=lambda: None)
        dead.start()
        dead.join()
        lane.thread = dead
        assert n.supervise() == 1
        assert lane.restarts == 1
        assert metrics.webhook_restarts.value("h", "other") == 1
        assert lane.thread is not dead and lane.thread is not None and lane.thread.is_alive()
        status = n.status()["h"]
        assert status["lanes"]["other"]["restarts"] == 1
        assert status["lanes"]["fire"]["restarts"] == 0
        assert n.supervise() == 0
        n.enqueue([note("k1")])
        # (the replaced thread still runs too, so both may POST it: the row is what counts)
        wait_until(lambda: n.counts().get("h") == {"sent": 1}, "the lane delivered", 10.0)
        assert old is not None and "k1" in receiver.delivered()
    finally:
        n.close()
    assert n.supervise() == 0  # closed: nothing restarted


def test_a_receiver_that_never_answers_costs_one_deadline(tmp_path: Path) -> None:
    """A listener that accepts and says nothing: the attempt ends at ``timeout_s`` and is a
    retry; without the deadline the lane would wait for ever (this test then times out)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        q = Queue(tmp_path / "n.db", [hook(url, timeout_s=0.3)])
        try:
            q.n.enqueue([note("k1")])
            q.step()
            state, attempts, next_ms, error, *_ = q.rows()["k1"]
            assert (state, attempts, next_ms) == ("pending", 1, NOW + 1000)
            assert error
            assert q.counted("retry") == 1
        finally:
            q.n.close()


def test_a_failed_enqueue_rolls_back_and_the_next_one_is_queued(q: Queue) -> None:
    """A write that fails inside the queue's transaction (here a trigger that aborts one key,
    standing for a full disk) leaves nothing half-written and no transaction open: the next
    enqueue is queued (found by the notify mutation run, 2026-12-06)."""
    other = sqlite3.connect(q.path)
    other.execute("CREATE TRIGGER poison BEFORE INSERT ON outbox WHEN NEW.key = 'poison' "
                  "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    other.commit()
    other.close()
    with pytest.raises(sqlite3.IntegrityError):
        q.n.enqueue([note("before"), note("poison")])
    assert "before" not in q.rows()  # the failed batch is rolled back whole
    assert q.n.enqueue([note("after")]) == 1
    assert set(q.rows()) == {"after"}


# -- added for the rest of the run: close, prune, migration, streaks, supervision ------------

def _old_queue(path: Path, rows: list[tuple[str, str, bytes, str]], *,
               with_order_key: bool) -> None:
    """An ``outbox`` as an earlier version left it: without the lane column, and without the
    order key column too unless ``with_order_key``; rows are (key, kind, body, order key)."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, webhook TEXT NOT NULL, key TEXT NOT "
               "NULL, kind TEXT NOT NULL, body BLOB NOT NULL, created_ms INTEGER NOT NULL, "
               "attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL, state TEXT NOT "
               "NULL DEFAULT 'pending', last_error TEXT, done_ms INTEGER, "
               + ("order_key TEXT NOT NULL DEFAULT '', " if with_order_key else "")
               + "UNIQUE (webhook, key))")
    if with_order_key:
        db.executemany("INSERT INTO outbox (webhook, key, kind, body, created_ms, next_ms, "
                       "order_key) VALUES ('h', ?, ?, ?, ?, ?, ?)",
                       [(k, kind, body, NOW, NOW, order) for k, kind, body, order in rows])
    else:
        db.executemany("INSERT INTO outbox (webhook, key, kind, body, created_ms, next_ms) "
                       "VALUES ('h', ?, ?, ?, ?, ?)",
                       [(k, kind, body, NOW, NOW) for k, kind, body, _ in rows])
    db.commit()
    db.close()


def _columns(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[1] for r in db.execute("PRAGMA table_info(outbox)")]
    finally:
        db.close()


def _in_join(thread: threading.Thread) -> bool:
    """Whether ``thread`` waits in ``Thread.join`` now (read from its stack)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "join" and frame.f_code.co_filename == threading.__file__:
            return True
        frame = frame.f_back
    return False


def _dead_thread() -> threading.Thread:
    """A thread that has ended: stands for a lane thread that died."""
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    return dead


def test_close_waits_for_a_post_under_way_and_marks_it_sent(tmp_path: Path,
                                                            receiver: Receiver) -> None:
    """close() while a lane waits for the receiver's answer: it waits for the lane, so the
    delivery is marked sent before the queue closes (else it stays pending and is sent again
    after the restart, and the last counts say pending)."""
    receiver.hold = threading.Event()
    n = Notifier(tmp_path / "n.db", [hook(receiver.url)], Metrics(), watchdog_s=None)
    n.start()
    closer = threading.Thread(target=n.close)
    try:
        n.enqueue([note("k1")])
        wait_until(lambda: receiver.delivered() == ["k1"], "the POST under way", 10.0)
        closer.start()
        # the answer goes out once close() waits for a lane (or, wrongly, has returned)
        wait_until(lambda: not closer.is_alive() or _in_join(closer), "close() waiting", 10.0)
    finally:
        receiver.hold.set()
    closer.join(10.0)
    assert not closer.is_alive()
    assert n.counts() == {"h": {"sent": 1}}
    db = sqlite3.connect(tmp_path / "n.db")
    try:
        assert db.execute("SELECT state, attempts FROM outbox").fetchall() == [("sent", 1)]
    finally:
        db.close()


def test_prune_says_how_many_rows_went(q: Queue, receiver: Receiver) -> None:
    receiver.answer("c", 500)
    q.n.enqueue([note("a", source="s1"), note("b", source="s2"), note("c", source="s3")])
    q.step()  # a and b sent at NOW, c waits for its retry
    q.clock.ms = NOW + KEEP_SENT_MS
    assert q.n._prune() == 0  # done exactly a week ago: kept
    q.clock.ms = NOW + KEEP_SENT_MS + 1
    assert q.n._prune() == 2
    assert q.n._prune() == 0
    assert list(q.rows()) == ["c"]


def test_a_failed_migration_leaves_the_old_queue_and_the_next_start_migrates(
        tmp_path: Path, receiver: Receiver) -> None:
    """A migration that fails half-way (a trigger that aborts the update, standing for a full
    disk) raises the error itself and leaves the queue as it was; the next start migrates it
    and its rows are delivered."""
    path = tmp_path / "old.db"
    _old_queue(path, [("raised", "fire_alarm", b'{"gateway":"gw","source":{"id":"loop1/3"}}',
                       "")], with_order_key=False)
    db = sqlite3.connect(path)
    db.execute("CREATE TRIGGER full BEFORE UPDATE ON outbox BEGIN SELECT RAISE(ABORT, "
               "'disk full'); END")
    db.commit()
    db.close()
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        Notifier(path, [hook(receiver.url)], Metrics(), clock=Clock(), watchdog_s=None)
    assert "order_key" not in _columns(path) and "lane" not in _columns(path)
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER full")
    db.commit()
    db.close()
    q = Queue(path, [hook(receiver.url)])
    try:
        assert q.rows()["raised"][5:7] == ("gw/loop1/3", "fire")
        q.step("fire")
        assert receiver.delivered() == ["raised"]
    finally:
        q.n.close()


def test_a_queue_with_order_keys_but_no_lanes_is_sent_on_the_other_lane(
        tmp_path: Path, receiver: Receiver) -> None:
    """The version before the lanes had order keys and one lane: its rows keep their order key
    and are sent on ``other`` (a row with no order key yet gets both from its body)."""
    path = tmp_path / "old.db"
    _old_queue(path, [("f1", "fire_alarm", b"{}", "gw/loop1/3"),
                      ("f2", "fire_alarm", b'{"gateway":"gw","source":{"id":"loop1/4"}}', "")],
               with_order_key=True)
    q = Queue(path, [hook(receiver.url)])
    try:
        assert {k: r[5:7] for k, r in q.rows().items()} == {
            "f1": ("gw/loop1/3", "other"), "f2": ("gw/loop1/4", "fire")}
        q.step("other")
        q.step("fire")
        assert receiver.delivered() == ["f1", "f2"]
    finally:
        q.n.close()


def test_a_streak_of_retries_is_logged_once_per_error_and_its_end_once(
        q: Queue, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="firegate.collector.notify")
    q.n.enqueue([note("k0", source="s0")])
    q.step()  # delivered without a streak: nothing to say
    assert caplog.messages == []
    receiver.answer("k1", 500, 500, 503)
    q.n.enqueue([note("k1")])
    q.step()
    q.clock.ms += 1000
    q.step()  # the same error again: not logged again
    assert caplog.messages == ["webhook h (other lane): k1 not delivered (HTTP 500); retrying "
                               "with back-off (repeats are not logged)"]
    q.clock.ms += 2000
    q.step()  # another error: logged
    assert caplog.messages[1:] == ["webhook h (other lane): k1 not delivered (HTTP 503); "
                                   "retrying with back-off (repeats are not logged)"]
    assert q.n.status()["h"]["last_error"] == "HTTP 503"
    assert q.n.status()["h"]["last_error_ms"] == NOW + 3000
    q.clock.ms += 4000
    q.step()
    assert caplog.messages[2:] == ["webhook h (other lane): delivering again"]
    q.n.enqueue([note("k2", source="s2")])
    q.step()
    assert receiver.delivered() == ["k0", "k1", "k1", "k1", "k1", "k2"]
    assert len(caplog.messages) == 3  # the streak is over: the next delivery says nothing


def test_a_lane_is_alive_while_its_thread_runs_and_beats(q: Queue) -> None:
    """Alive: a thread that runs and a beat younger than timeout_s + the longest fault pause
    + MAX_WAIT_S + 5 s (here 5 + 10 + 2 + 5 = 22 s); the gauge and the status say the same."""
    lane = q.n._lanes["h", "other"]
    lane.beat = 1000.0
    assert not lane.alive(1000.0)  # no thread
    stop = threading.Event()
    stand_in = threading.Thread(target=stop.wait)  # stand-in for a running lane thread
    stand_in.start()
    try:
        lane.thread = stand_in
        assert lane.alive(1000.0)
        assert lane.alive(1021.999)
        assert not lane.alive(1022.0)
        lane.beat = time.monotonic()
        q.n._gauge(time.monotonic())
        assert q.metrics.webhook_sender_up.values() == {("h", "fire"): 0.0,
                                                        ("h", "other"): 1.0}
        lanes = q.n.status()["h"]["lanes"]
        assert (lanes["other"]["alive"], lanes["fire"]["alive"]) == (True, False)
    finally:
        stop.set()
        stand_in.join()
    assert not lane.alive(lane.beat)  # the thread has ended


def test_status_per_webhook(tmp_path: Path, receiver: Receiver) -> None:
    q = Queue(tmp_path / "n.db", [hook(receiver.url, "busy"),
                                  hook(receiver.url, "idle", events=frozenset({"fire_alarm"}))])
    try:
        receiver.answer("k2", 404)
        receiver.answer("k3", 500)
        q.n.enqueue([note("k1", source="s1"), note("k2", source="s2"), note("k3", source="s3")])
        q.clock.ms = NOW + 5
        q.step(name="busy")
        for lane in q.n._lanes.values():
            lane.beat = time.monotonic() - 100.04
        status = q.n.status()
        for name in ("busy", "idle"):
            for lane_name in ("fire", "other"):
                idle = status[name]["lanes"][lane_name].pop("idle_s")
                assert isinstance(idle, float) and 100.0 <= idle < 200.0
                assert idle == round(idle, 1)
        assert status == {
            "busy": {"lanes": {"fire": {"alive": False, "restarts": 0},
                               "other": {"alive": False, "restarts": 0}},
                     "pending": 1, "sent": 1, "failed": 1, "errors": 0,
                     "last_error": "HTTP 500", "last_error_ms": NOW + 5},
            "idle": {"lanes": {"fire": {"alive": False, "restarts": 0},
                               "other": {"alive": False, "restarts": 0}},
                     "pending": 0, "sent": 0, "failed": 0, "errors": 0,
                     "last_error": None, "last_error_ms": None}}
    finally:
        q.n.close()


def test_the_watchdog_restarts_a_dead_lane_by_itself(tmp_path: Path, receiver: Receiver,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    n = Notifier(tmp_path / "n.db", [hook(receiver.url)], metrics, watchdog_s=0.05)
    n.start()
    try:
        threads = {t.name: t for t in threading.enumerate()}
        for name in ("webhook-h-fire", "webhook-h-other", "webhook-watchdog"):
            assert threads[name].daemon  # a collector that exits without close() is not held
        lane = n._lanes["h", "other"]
        for restarts in (1, 2):
            dead = _dead_thread()
            lane.thread = dead

            def restarted(r: int = restarts, d: threading.Thread = dead) -> bool:
                return lane.restarts == r and lane.thread is not d

            wait_until(restarted, f"restart {restarts} by the watchdog", 10.0)
        assert metrics.webhook_restarts.value("h", "other") == 2
        assert metrics.webhook_restarts.value("h", "fire") == 0
        n.enqueue([note("k1")])
        wait_until(lambda: n.counts().get("h") == {"sent": 1}, "the lane delivered", 10.0)
    finally:
        n.close()
    assert caplog.messages.count("webhook h: the other sender thread died; restarted") == 2


def test_supervise_restarts_every_dead_lane_at_once(tmp_path: Path, receiver: Receiver) -> None:
    metrics = Metrics()
    n = Notifier(tmp_path / "n.db", [hook(receiver.url)], metrics, watchdog_s=None)
    n.start()
    try:
        for lane in n._lanes.values():
            lane.thread = _dead_thread()
        assert n.supervise() == 2
        assert metrics.webhook_restarts.values() == {("h", "fire"): 1.0, ("h", "other"): 1.0}
        assert metrics.webhook_sender_up.values() == {("h", "fire"): 1.0, ("h", "other"): 1.0}
    finally:
        n.close()
    # closed: the threads have ended and none is restarted
    assert n.supervise() == 0
    assert metrics.webhook_sender_up.values() == {("h", "fire"): 0.0, ("h", "other"): 0.0}


def test_the_watchdog_prunes_the_history(tmp_path: Path, receiver: Receiver,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog forgets old history every PRUNE_EVERY_S (here every tick)."""
    monkeypatch.setattr(collector.notify, "PRUNE_EVERY_S", 0.0)
    clock = Clock()
    receiver.answer("waiting", 500)
    n = Notifier(tmp_path / "n.db", [hook(receiver.url)], Metrics(), clock=clock,
                 watchdog_s=0.05)
    n.start()
    try:
        n.enqueue([note("old", source="s1"), note("waiting", source="s2")])
        wait_until(lambda: n.counts().get("h", {}).get("sent") == 1, "old delivered", 10.0)
        # a week on: waiting is failed now (given up) and kept, old is forgotten
        clock.ms = NOW + KEEP_SENT_MS + 1
        wait_until(lambda: n.counts().get("h") == {"failed": 1}, "old forgotten", 10.0)
    finally:
        n.close()


def test_a_running_lane_outlives_a_fault_and_delivers_after_it(
        tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    """The queue's table gone for a while (renamed by a second connection, standing for a
    damaged database): each lane's step raises; it is counted, logged once per lane, and the
    same lane threads deliver once the table is back (no watchdog here to restart them)."""
    path = tmp_path / "n.db"
    metrics = Metrics()
    n = Notifier(path, [hook(receiver.url)], metrics, watchdog_s=None)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("ALTER TABLE outbox RENAME TO outbox_away")
        n.start()
        wait_until(lambda: metrics.webhook_errors.value("h") >= 2, "both lanes failed", 10.0)
        assert n._last_error["h"][0].startswith("OperationalError: no such table")
        other.execute("ALTER TABLE outbox_away RENAME TO outbox")
        n.enqueue([note("k1"), note("f1", kind="fire_alarm")])
        wait_until(lambda: n.counts().get("h") == {"sent": 2}, "both lanes delivered", 10.0)
    finally:
        n.close()
        other.close()
    logged = sorted(r.getMessage() for r in caplog.records if "unexpected" in r.getMessage())
    assert logged == [f"webhook h ({lane} lane): unexpected error, counted and retried (repeats "
                      "are not logged)" for lane in ("fire", "other")]


def test_the_watchdog_outlives_a_failed_prune(tmp_path: Path, receiver: Receiver,
                                              caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog's prune (here every tick) fails while the table is gone: logged with its
    traceback, and the watchdog goes on (it restarts a dead lane afterwards)."""
    monkeypatch.setattr(collector.notify, "PRUNE_EVERY_S", 0.0)
    path = tmp_path / "n.db"
    n = Notifier(path, [hook(receiver.url)], Metrics(), watchdog_s=0.05)
    other = sqlite3.connect(path, isolation_level=None)

    def watchdog_failed() -> bool:
        return any(r.getMessage() == "webhook watchdog" and r.exc_info is not None
                   for r in list(caplog.records))

    try:
        other.execute("ALTER TABLE outbox RENAME TO outbox_away")
        n.start()
        wait_until(watchdog_failed, "the watchdog's prune failed", 10.0)
        other.execute("ALTER TABLE outbox_away RENAME TO outbox")
        lane = n._lanes["h", "fire"]
        dead = _dead_thread()
        lane.thread = dead
        wait_until(lambda: lane.restarts == 1 and lane.thread is not dead,
                   "a restart by the watchdog", 10.0)
    finally:
        n.close()
        other.close()


def _waiting_in_run(thread: threading.Thread | None) -> bool:
    """Whether ``thread`` (a lane) waits on an event from ``Notifier._run`` now (the mutation
    run calls ``_run``'s body as ``xǁNotifierǁ_run__mutmut_<name>``)."""
    frame = sys._current_frames().get(thread.ident or -1) if thread is not None else None
    waits = False
    while frame is not None:
        name = frame.f_code.co_name
        if name == "wait" and frame.f_code.co_filename == threading.__file__:
            waits = True
        if name == "_run" or name.startswith("xǁNotifierǁ_run__mutmut_"):
            return waits
        frame = frame.f_back
    return False


def test_a_lane_waits_for_a_head_not_yet_due_instead_of_spinning(tmp_path: Path,
                                                                 receiver: Receiver) -> None:
    """A retry due in half a second (the clock stands still here): the lane sleeps on its wake
    event until then, it does not step again and again (which would burn a core)."""
    receiver.answer("k1", 503)
    clock = Clock()
    n = Notifier(tmp_path / "n.db", [hook(receiver.url, retry_min_s=0.5)], Metrics(),
                 clock=clock, watchdog_s=None)
    n.start()
    try:
        n.enqueue([note("k1")])
        wait_until(lambda: n.counts().get("h") == {"pending": 1} and receiver.delivered()
                   == ["k1"] and n._last_error.get("h") is not None, "the first attempt", 10.0)
        lane = n._lanes["h", "other"]
        wait_until(lambda: _waiting_in_run(lane.thread), "the lane asleep", 10.0)
    finally:
        n.close()


def test_a_running_lane_sends_a_retry_when_it_is_due(tmp_path: Path,
                                                     receiver: Receiver) -> None:
    """Nothing else queued: the lane wakes by itself when the retry is due."""
    receiver.answer("k1", 503)
    n = Notifier(tmp_path / "n.db", [hook(receiver.url, retry_min_s=0.05)], Metrics(),
                 watchdog_s=None)
    n.start()
    try:
        n.enqueue([note("k1")])
        wait_until(lambda: n.counts().get("h") == {"sent": 1}, "the retry delivered", 10.0)
        assert receiver.delivered() == ["k1", "k1"]
    finally:
        n.close()


def test_the_default_clock_is_wall_clock_milliseconds(tmp_path: Path,
                                                      receiver: Receiver) -> None:
    n = Notifier(tmp_path / "n.db", [hook(receiver.url)], Metrics(), watchdog_s=None)
    try:
        before = time.time_ns() // 1_000_000
        n.enqueue([note("k1")])
        after = time.time_ns() // 1_000_000
    finally:
        n.close()
    db = sqlite3.connect(tmp_path / "n.db")
    try:
        (created,) = db.execute("SELECT created_ms FROM outbox").fetchone()
    finally:
        db.close()
    assert isinstance(created, int) and before <= created <= after


def test_a_failed_mark_sent_rolls_back_and_the_row_is_sent_again(q: Queue,
                                                                 receiver: Receiver) -> None:
    """Marking the step's deliveries fails (a trigger aborts it, standing for a full disk): the
    step raises, nothing is half-marked, no transaction stays open; the rows are still pending
    and the next step sends them again under the same delivery key."""
    other = sqlite3.connect(q.path)
    other.execute("CREATE TRIGGER full BEFORE UPDATE OF state ON outbox WHEN NEW.state = 'sent' "
                  "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    other.commit()
    q.n.enqueue([note("k1", source="s1"), note("k2", source="s2")])
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        q.step()
    assert [r[:2] for r in q.rows().values()] == [("pending", 0), ("pending", 0)]
    other.execute("DROP TRIGGER full")
    other.commit()
    other.close()
    assert q.n.enqueue([note("k3", source="s3")]) == 1
    q.step()
    assert receiver.delivered() == ["k1", "k2", "k1", "k2", "k3"]
    assert q.n.counts() == {"h": {"sent": 3}}
