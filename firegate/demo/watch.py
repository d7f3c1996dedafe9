"""What the demo shows, gathered from the running pipeline without touching its data path.

Three read-only views, polled about once a second:

* **the broker** (:class:`Tap`): a plain MQTT subscriber to the demo gateway's ``records`` and
  ``status`` topics, decoded with the contract's own decoder (``protocols.wire``): every event
  and reading as it crosses the broker, the same messages the collector receives;
* **the collector** (its state directory, read-only, as ``firegate collector status`` reads
  it): site colour and reasons, gateway online/offline, records stored, duplicates, dead
  letters; and with the embedded store, the points stored per measurement;
* **the agent** (its ``state.db``, as ``firegate status`` reads it): links and outbox;
* **the web console's API** (``GET /api/v1/alarms`` with the demo operator's token): the open
  alarms, and who acknowledged what (in the browser or by any API client).

:class:`Observer` keeps what the summary needs (events by type, colours and gateway states
seen), so the summary says what happened during the run, not only how it ended.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from firegate.demo.plan import Broker, ConsoleAccess, DemoError

__all__ = ["Acknowledged", "FeedItem", "Observer", "Reading", "Tap", "View", "store_counts"]

FEED_LENGTH = 200


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One event record as published by the gateway."""

    receive_ms: int
    seq: int
    type: str
    active: bool
    priority: int
    source_id: str
    description: str | None
    detail: str | None
    value: float | None
    limit: float | None
    operations: tuple[str, ...] = ()
    """Operator actions of an ``operation`` event (``reset``, ``silence``...)."""


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """An alarm someone acknowledged (from the collector's API)."""

    alarm_id: str
    at_ms: int
    by: str
    type: str
    description: str
    note: str | None


@dataclass(frozen=True, slots=True)
class Reading:
    """The latest value of one sensor."""

    source_id: str
    description: str | None
    quantity: str
    value: float
    unit: str
    receive_ms: int


class Tap:
    """A read-only MQTT subscriber to one gateway's ``records`` and ``status`` topics."""

    def __init__(self, broker: Broker, gateway_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from protocols.wire import Channel, topic

        self._lock = threading.Lock()
        self._events: list[FeedItem] = []
        self._readings: list[Reading] = []
        self._statuses: list[str] = []
        self.messages = 0
        self.undecodable = 0
        self.connected = False
        self.error: str | None = None
        self._topics = [(topic(gateway_id, Channel.RECORDS), 1),
                        (topic(gateway_id, Channel.STATUS), 1)]
        url = urlsplit(broker.url)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or (
            8883 if url.scheme == "mqtts" else 1883)
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"firegate-demo-view-{time.time_ns() % 10**9}",
                                   protocol=mqtt.MQTTv5)
        if url.scheme == "mqtts":
            self._client.tls_set()
        if broker.username is not None:
            self._client.username_pw_set(broker.username, broker.password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._subscribed = threading.Event()

    def subscribe(self, timeout: float = 20.0) -> None:
        """Connect and subscribe now, without a thread (the demo starts the agent after
        this, so the view misses none of its messages); DemoError if it cannot."""
        deadline = time.monotonic() + timeout
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except OSError as exc:
            raise DemoError(f"cannot reach the broker {self._host}:{self._port}: {exc}") from None
        while not self._subscribed.is_set():
            self._client.loop(timeout=0.1)
            if self.error is not None or time.monotonic() > deadline:
                raise DemoError(f"broker {self._host}:{self._port}: "
                                f"{self.error or 'no subscription acknowledged'}")

    def start(self) -> None:
        """Go on receiving on paho's own thread (reconnecting by itself if the link drops)."""
        self._client.loop_start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            self.error = f"broker refused the view: {reason}"
            return
        self.connected, self.error = True, None
        client.subscribe(self._topics)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, reasons: Any, _p: Any = None) -> None:
        if any(r.is_failure for r in reasons):
            self.error = f"subscription refused: {', '.join(str(r) for r in reasons)}"
        else:
            self._subscribed.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        self.connected = False

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        from protocols.wire import (
            Channel,
            Event,
            WireError,
            decode_batch,
            decode_status,
            parse_topic,
        )

        try:
            _gw, channel = parse_topic(msg.topic)
            if channel is Channel.STATUS:
                if not msg.payload:  # a retained status being deleted
                    return
                status = decode_status(msg.payload)
                with self._lock:
                    self.messages += 1
                    self._statuses.append(status.state.value)
                return
            batch = decode_batch(msg.payload)
        except WireError:
            with self._lock:
                self.undecodable += 1
            return
        events, readings = [], []
        for r in batch.records:
            src = r.source
            if isinstance(r, Event):
                events.append(FeedItem(r.receive_ms, r.seq, r.type.value, r.active,
                                       int(r.priority), src.id, src.description, r.detail,
                                       r.value, r.limit, r.operations))
            else:
                readings.append(Reading(src.id, src.description, r.quantity.value, r.value,
                                        r.unit, r.receive_ms))
        with self._lock:
            self.messages += 1
            self._events += events
            self._readings += readings

    def drain(self) -> tuple[list[FeedItem], list[Reading], list[str]]:
        """What arrived since the last call: events, readings, gateway states."""
        with self._lock:
            out = self._events, self._readings, self._statuses
            self._events, self._readings, self._statuses = [], [], []
        return out


@dataclass
class View:
    """Everything the display shows, refreshed by :meth:`Observer.poll`."""

    feed: deque[FeedItem] = field(default_factory=lambda: deque(maxlen=FEED_LENGTH))
    readings: dict[tuple[str, str], Reading] = field(default_factory=dict)
    """The latest reading per (source id, quantity): a BLE sensor sends several."""
    events: Counter[tuple[str, bool]] = field(default_factory=Counter)
    records: int = 0
    colour: str | None = None
    reasons: list[str] = field(default_factory=list)
    colours_seen: set[str] = field(default_factory=set)
    gateway_state: str | None = None
    gateway_reason: str | None = None
    gateway_states_seen: set[str] = field(default_factory=set)
    collector: dict[str, Any] = field(default_factory=dict)
    """The collector's last status snapshot (records_stored, duplicates, dead_letters...)."""
    store_points: dict[str, int] | None = None
    links: dict[str, str] = field(default_factory=dict)
    outbox_depth: int | None = None
    tap_connected: bool = False
    tap_undecodable: int = 0
    open_alarms: int | None = None
    """Open alarms of the collector's alarm book; None: the console's API not reached."""
    unacknowledged: int = 0
    acknowledged: list[Acknowledged] = field(default_factory=list)
    """The latest acknowledgements, newest first."""
    new_acknowledged: list[Acknowledged] = field(default_factory=list)
    """Those first seen by the last poll."""


class Observer:
    """Polls the three views into one :class:`View`."""

    def __init__(self, *, tap: Tap, site: str, gateway: str, registry: Path,
                 agent_state: Path, store: Path | None,
                 console: ConsoleAccess | None = None) -> None:
        self.tap, self.site, self.gateway = tap, site, gateway
        self.registry, self.agent_state, self.store = registry, agent_state, store
        self.console = console
        self.view = View()
        self._acks_seen: set[str] = set()

    def poll(self) -> list[FeedItem]:
        """Refresh the view; returns the events that arrived since the last poll."""
        v = self.view
        events, readings, statuses = self.tap.drain()
        for e in events:
            v.feed.append(e)
            v.events[(e.type, e.active)] += 1
        for r in readings:
            v.readings[(r.source_id, r.quantity)] = r
        v.records += len(events) + len(readings)
        v.gateway_states_seen.update(statuses)
        v.tap_connected, v.tap_undecodable = self.tap.connected, self.tap.undecodable
        self._poll_collector()
        self._poll_agent()
        self._poll_store()
        self._poll_console()
        return events

    def _api(self, path: str) -> Any:
        assert self.console is not None
        request = urllib.request.Request(self.console.url + path, headers={
            "Authorization": f"Bearer {self.console.token}"})
        with urllib.request.urlopen(request, timeout=1.0) as answer:  # loopback only
            return json.loads(answer.read())

    def _poll_console(self) -> None:
        """Open alarms and acknowledgements, from the API the console uses."""
        if self.console is None:
            return
        try:
            open_now = self._api("/api/v1/alarms?state=open&limit=1000")["alarms"]
            acked = self._api("/api/v1/alarms?state=all&acknowledged=true&limit=20")["alarms"]
        except (OSError, ValueError, KeyError):
            return  # not up yet, or stopping: the next poll tries again
        v = self.view
        v.open_alarms = len(open_now)
        v.unacknowledged = sum(1 for a in open_now if not a["acknowledged"])
        latest = [Acknowledged(a["id"], a["acknowledged_ms"] or 0, a["acknowledged_by"] or "?",
                               a["type"], a["description"] or a["source"], a["note"])
                  for a in acked]
        latest.sort(key=lambda a: a.at_ms, reverse=True)
        v.acknowledged = latest[:5]
        v.new_acknowledged = [a for a in reversed(latest) if a.alarm_id not in self._acks_seen]
        self._acks_seen.update(a.alarm_id for a in latest)

    def _poll_collector(self) -> None:
        from collector.registry import read_status

        try:
            status = read_status(self.registry)
        except (FileNotFoundError, sqlite3.Error):
            return  # not written yet, or being created
        v = self.view
        for site in status.sites:
            if site.id == self.site:
                v.colour, v.reasons = site.colour, list(site.reasons)
                v.colours_seen.add(site.colour)
        for gw in status.gateways:
            if gw.id == self.gateway:
                v.gateway_state, v.gateway_reason = gw.state, gw.reason
                v.gateway_states_seen.add(gw.state)
        for _updated, body in status.snapshots.values():
            v.collector = body

    def _poll_agent(self) -> None:
        from edge.state import StateReader

        if not self.agent_state.exists():
            return
        try:
            with StateReader(self.agent_state) as state:
                snaps = state.snapshots()
        except (OSError, sqlite3.Error):
            return
        links = snaps.get("links", ({}, 0))[0] or {}
        self.view.links = {name: str(info.get("state")) for name, info in links.items()}
        depth = (snaps.get("outbox", ({}, 0))[0] or {}).get("depth") or {}
        self.view.outbox_depth = sum(int(n) for n in depth.values())

    def _poll_store(self) -> None:
        if self.store is None or not self.store.exists():
            return
        self.view.store_points = store_counts(self.store)


def store_counts(path: Path) -> dict[str, int] | None:
    """Points in the embedded store per measurement (read-only; None if unreadable)."""
    from collector.sinks.sqlite import connect

    try:
        conn = connect(path, read_only=True)
        try:
            rows = conn.execute("SELECT measurement, count(*) FROM points GROUP BY measurement")
            return {str(m): int(n) for m, n in rows}
        finally:
            conn.close()
    except sqlite3.Error:
        return None
