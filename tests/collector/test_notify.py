"""Webhooks against a real local HTTP server: signed, retried when it fails, sent once, kept
across a restart; and end to end from the fleet's alarms through the collector."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from collector.config import DEFAULT_WEBHOOK_EVENTS, WebhookConfig
from collector.metrics import Metrics
from collector.notify import Notification, Notifier, event_body, sign
from protocols.wire import Bus, Event, EventType, Source
from simulators.fleet import FleetConfig, run_fleet
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port

from .conftest import async_wait_until, config_data, running, wait_until, write_config

SECRET = "s3cret-键-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
"""A webhook secret: at least 32 bytes (the config refuses less), not all ASCII."""
NOW = 1_718_000_000_000
TOLERANCE_S = 300


def verify(secret: str, body: bytes, header: str, now_s: float,
           tolerance_s: float = TOLERANCE_S) -> bool:
    """What a receiver does with ``X-Firegate-Signature`` (docs/collector.md): recompute the
    HMAC over ``t.body``, compare in constant time, refuse a ``t`` outside the window."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if "t" not in fields or "v1" not in fields or not fields["t"].isdigit():
        return False
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and \
        abs(now_s - int(fields["t"])) <= tolerance_s


class Receiver:
    """A webhook endpoint: records every request, answers ``fail`` (status) to the first
    ``failures`` of them, 200 after; or what ``answer`` says for each request's JSON body."""

    def __init__(self, port: int | None = None, failures: int = 0, fail: int = 500,
                 headers: dict[str, str] | None = None,
                 answer: Callable[[dict[str, Any]], int] | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived: list[float] = []
        """time.time() of each request (to check the signature's timestamp against)."""
        self.failures = failures
        self.lock = threading.Lock()  # the lanes post concurrently: one request at a time here
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with owner.lock:
                    owner.arrived.append(time.time())
                    owner.requests.append((dict(self.headers.items()), body))
                    failing = owner.failures > 0
                    owner.failures -= 1
                    status = answer(json.loads(body)) if answer is not None else \
                        fail if failing else 200
                self.send_response(status)
                for k, v in (headers or {}).items() if failing else ():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def sent_keys(self) -> list[str]:
        """The key of every request, in arrival order."""
        return [json.loads(b)["key"] for _, b in list(self.requests)]

    def delivered(self) -> list[dict[str, Any]]:
        """Every request's body, in arrival order, after checking its signature the way a
        receiver does (:func:`verify`: HMAC-SHA256 of ``t.body``, compared in constant time,
        ``t`` within the tolerance window of the arrival)."""
        out = []
        with self.lock:
            requests = list(zip(self.requests, self.arrived, strict=True))
        for (headers, body), arrived in requests:
            assert verify(SECRET, body, headers["X-Firegate-Signature"], arrived)
            doc = json.loads(body)
            assert headers["X-Firegate-Delivery"] == doc["key"]
            assert headers["X-Firegate-Event"] == doc["kind"]
            assert headers["Content-Type"].startswith("application/json")
            out.append(doc)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def hook(url: str, **kw: object) -> WebhookConfig:
    return WebhookConfig(name=str(kw.pop("name", "hook")), url=url, secret=SECRET,
                         retry_min_s=0.05, retry_max_s=0.4, **kw)  # type: ignore[arg-type]


def note(key: str, kind: str = "fire_alarm", active: bool = True,
         source: str | None = "smoke-1", gateway: str | None = "gw") -> Notification:
    """A notification; by default all from one source (so kept in the order queued)."""
    return Notification(kind, key, json.dumps({"key": key, "kind": kind}).encode(), active,
                        gateway=gateway, source=source)


def test_signature_and_body() -> None:
    src = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")
    e = Event(source=src, type=EventType.FIRE_ALARM, receive_ms=NOW, seq=1041, state=2)
    body = event_body("gw-0001", "sh-pd-017", e, colour="red")
    assert body == event_body("gw-0001", "sh-pd-017", e, colour="red")  # same bytes on retry
    doc = json.loads(body)
    assert doc == {"v": 1, "kind": "fire_alarm", "active": True, "key": "event:gw-0001:1041",
                   "gateway": "gw-0001", "site": "sh-pd-017", "seq": 1041, "priority": 0,
                   "time_ms": NOW, "source_ms": None, "state": 2, "risk": "red",
                   "source": {"id": src.id, "bus": "gb26875", "desc": "三层东走廊感烟探测器"}}
    assert "三层".encode() in body  # real UTF-8, not \\u escapes
    digest = hmac.new(b"k", b"1718000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", body, 1_718_000_000) == f"t=1718000000,v1={digest}"
    header = sign("k", body)
    assert verify("k", body, header, time.time())
    t = int(header.split(",")[0][2:])
    # A captured request replayed later: refused outside the window; a forged t does not
    # match the HMAC; neither does a changed body or another secret.
    assert not verify("k", body, header, t + TOLERANCE_S + 1)
    assert not verify("k", body, header.replace(f"t={t}", f"t={t + 600}"), t + 600)
    assert not verify("k", body + b" ", header, t)
    assert not verify("k2", body, header, t)


def test_retried_while_the_receiver_fails_then_sent_once_in_order(tmp_path: Path) -> None:
    r = Receiver(failures=3)
    metrics = Metrics()
    n = Notifier(tmp_path / "n.sqlite", [hook(r.url)], metrics).start()
    try:
        assert n.enqueue([note("event:gw:1"), note("event:gw:2"), note("event:gw:3")]) == 3
        assert n.enqueue([note("event:gw:2")]) == 0  # a redelivered record: already queued
        wait_until(lambda: n.counts().get("hook", {}).get("sent") == 3, "three sent")
        assert n.enqueue([note("event:gw:1")]) == 0  # and already sent
    finally:
        n.close()
        r.close()
    keys = [json.loads(b)["key"] for _, b in r.requests]
    # The first one failed three times (head of line: the others wait, order kept).
    assert keys == ["event:gw:1"] * 4 + ["event:gw:2", "event:gw:3"]
    assert len(r.delivered()) == 6  # every attempt carries a valid signature
    assert metrics.notifications.value("hook", "retry") == 3
    assert metrics.notifications.value("hook", "sent") == 3


def test_queued_notifications_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    n = Notifier(tmp_path / "n.sqlite", [hook(url)], Metrics()).start()
    n.enqueue([note("offline:gw:1", "gateway_offline")])
    wait_until(lambda: n.pending() == 1, "queued")
    n.close()  # nobody listening yet: it stays queued
    r = Receiver(port=port)
    n = Notifier(tmp_path / "n.sqlite", [hook(url)], Metrics()).start()
    try:
        wait_until(lambda: n.pending() == 0 and len(r.requests) == 1, "sent after restart")
    finally:
        n.close()
        r.close()
    assert json.loads(r.requests[0][1])["key"] == "offline:gw:1"


def test_refused_for_good_moves_on_retry_after_is_honoured(tmp_path: Path) -> None:
    bad = Receiver(failures=1, fail=400)
    slow = Receiver(failures=1, fail=429, headers={"Retry-After": "0.3"})
    metrics = Metrics()
    n = Notifier(tmp_path / "n.sqlite", [hook(bad.url, name="bad"), hook(slow.url, name="slow")],
                 metrics).start()
    try:
        n.enqueue([note("event:gw:1"), note("event:gw:2")])
        wait_until(lambda: n.pending() == 0, "all handled")
        counts = n.counts()
    finally:
        n.close()
        bad.close()
        slow.close()
    assert counts == {"bad": {"failed": 1, "sent": 1}, "slow": {"sent": 2}}
    assert metrics.notifications.value("bad", "refused") == 1
    assert [json.loads(b)["key"] for _, b in slow.requests] == \
        ["event:gw:1", "event:gw:1", "event:gw:2"]


def test_event_filters_per_webhook(tmp_path: Path, receiver: Receiver) -> None:
    fire_only = Receiver()
    n = Notifier(tmp_path / "n.sqlite", [hook(fire_only.url, name="fire", events=frozenset(
        {"fire_alarm"}), restores=False), hook(receiver.url)], Metrics()).start()
    try:
        assert n.wants("fault", True) and not n.wants("operation", True)
        n.enqueue([note("a", "fire_alarm"), note("b", "fault"), note("c", "fire_alarm", False),
                   note("d", "operation")])
        wait_until(lambda: n.pending() == 0 and len(receiver.requests) == 3, "sent")
    finally:
        n.close()
        fire_only.close()
    assert [json.loads(b)["key"] for _, b in fire_only.requests] == ["a"]
    assert sorted(json.loads(b)["key"] for _, b in receiver.requests) == ["a", "b", "c"]


async def test_fleet_alarms_reach_the_webhook_once_each(
        mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = Receiver(failures=5)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto,
        webhook=[{"url": r.url, "secret_env": "HOOK_SECRET", "retry_min_s": 0.05,
                  "retry_max_s": 0.3}]))
    assert cfg.webhooks[0].secret == SECRET
    try:
        with running(cfg) as c:
            report = await run_fleet(FleetConfig(
                broker=f"mqtt://127.0.0.1:{mosquitto.port}", gateways=4, records=3000, rate=300,
                batch_interval=0.1, alarm_rate=0.02, seed=8, keep_records=True))
            await async_wait_until(lambda: c.metrics.records_stored.value() >= 3000, "stored")
            assert c.notifier is not None
            notifier = c.notifier
            await async_wait_until(lambda: notifier.pending() == 0 and len(r.requests) > 5,
                                   "the webhook queue drained")
            hooks = c.snapshot(time.time_ns() // 1_000_000)["webhooks"]
            assert isinstance(hooks, dict)
            assert {lane: v["alive"] for lane, v in hooks["webhook-1"]["lanes"].items()} == \
                {"fire": True, "other": True}
            assert hooks["webhook-1"]["pending"] == 0 and hooks["webhook-1"]["errors"] == 0
    finally:
        r.close()
    expected = {f"event:{gw}:{seq}" for gw, g in report.gateways.items()
                for seq, rec in (g.records or {}).items()
                if isinstance(rec, Event) and rec.type.value in DEFAULT_WEBHOOK_EVENTS}
    docs = r.delivered()
    sent = Counter(d["key"] for d in docs[5:])  # the first five attempts were answered 500
    assert {k for k in sent if k.startswith("event:")} == expected
    assert max(sent.values()) == 1
    assert sum(1 for d in docs[5:] if d["kind"] == "gateway_offline") == 4  # the shutdowns
    fires = [d for d in docs if d["kind"] == "fire_alarm" and d["active"]]
    assert fires and all(d["risk"] == "red" for d in fires)
