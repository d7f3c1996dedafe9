"""``GET /api/v1/stream``: alarm and site changes as Server-Sent Events, to every client
without ever slowing the collector.

The path of one change::

    writer thread: AlarmBook persists it -> subscriber callback -> Broadcaster.publish
        (loop.call_soon_threadsafe: a lock and a wake-up, nothing else on the writer thread)
    API loop: Broadcaster._fan_out -> one encoded frame -> put_nowait on each client's queue
        (only the clients whose sites include the change's site)
    each client's response: queue -> socket

Each client's queue is bounded (``[http] stream_queue``). A client that falls that far
behind (a stalled reader, a slow link) is **dropped**: taken off the broadcast at once, told
so (``event: dropped``) when its connection can be written again, and counted
(:attr:`Broadcaster.dropped`); everybody else is unaffected. EventSource reconnects by
itself; the console then reloads the list, so nothing is lost to a person looking at it.

One user holds at most ``[http] max_streams_per_user`` streams: a newer one closes that
user's oldest (``event: replaced``, counted :attr:`Broadcaster.replaced`; the console that
gets it stops reconnecting), so a console reopened in the duty room always gets its stream
and one user (a viewer's script) cannot take the slots of the duty officer.

Frames (https://html.spec.whatwg.org/multipage/server-sent-events.html): ``id`` (a counter
of this process), ``event`` (``alarm``, ``site``, ``hello``, ``dropped``, ``replaced``) and
one ``data`` line of JSON (``json.dumps`` escapes CR and LF, so hostile text cannot end a
frame early or forge another). A comment line (``: heartbeat``) every ``heartbeat_s`` keeps
proxies from closing an idle stream and lets the server notice a client that went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import Receive, Scope, Send

from collector.alarms.model import AlarmChange, SiteChange
from collector.api.auth import User
from collector.api.jsonview import alarm_json

__all__ = ["Broadcaster", "EventStream", "Subscriber", "encode_change"]

log = logging.getLogger("firegate.collector.api")


def encode_change(change: AlarmChange | SiteChange, event_id: int) -> bytes:
    """One SSE frame for a change."""
    if isinstance(change, AlarmChange):
        event = "alarm"
        data: dict[str, Any] = {"what": change.what, "alarm": alarm_json(change.alarm)}
    else:
        event = "site"
        data = {"site": change.site, "colour": change.colour, "reasons": list(change.reasons),
                "at_ms": change.at_ms}
    return frame(event, data, event_id)


def frame(event: str, data: object, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


class Subscriber:
    """One stream client: its user (for the site filter) and its bounded queue."""

    def __init__(self, user: User, size: int) -> None:
        self.user = user
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(size)
        self.dropped = False
        self.replaced = False
        """Closed for a newer stream of the same user (``max_per_user``)."""
        self.sent = 0

    def end(self) -> None:
        """Wake the client's response with the end marker (its queue may be full)."""
        while True:
            try:
                self.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()


class Broadcaster:
    """Fans the book's changes out to the stream clients (see the module's docstring)."""

    def __init__(self, *, queue_size: int = 1000, max_clients: int = 200,
                 heartbeat_s: float = 15.0, max_per_user: int = 4) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.max_per_user = max_per_user
        self.heartbeat_s = heartbeat_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[Subscriber] = set()
        self._by_user: dict[str, list[Subscriber]] = {}
        """Each user's streams, oldest first (the per-user cap closes the oldest)."""
        self._next_id = 0
        self.dropped = 0
        """Clients dropped for falling ``queue_size`` events behind, since start."""
        self.refused = 0
        """Clients refused because ``max_clients`` were connected."""
        self.replaced = 0
        """Streams closed for a newer one of the same user past ``max_per_user``."""
        self.missed = 0
        """Changes published while no loop was bound (the server not running)."""
        self.published = 0

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """The loop the server runs on (None when it stops)."""
        self._loop = loop

    # -- any thread ---------------------------------------------------------------------------

    def publish(self, change: AlarmChange | SiteChange) -> None:
        """Hand a change to the loop; never blocks (the AlarmBook's subscriber callback)."""
        loop = self._loop
        if loop is None:
            self.missed += 1
            return
        try:
            loop.call_soon_threadsafe(self._fan_out, change)
        except RuntimeError:  # the loop closed between the check and the call
            self.missed += 1

    # -- the loop -----------------------------------------------------------------------------

    def _fan_out(self, change: AlarmChange | SiteChange) -> None:
        self.published += 1
        site = change.alarm.site if isinstance(change, AlarmChange) else change.site
        encoded: bytes | None = None
        for sub in list(self._subscribers):
            if not sub.user.sees(site):
                continue
            if encoded is None:
                self._next_id += 1
                encoded = encode_change(change, self._next_id)
            try:
                sub.queue.put_nowait(encoded)
            except asyncio.QueueFull:
                self._drop(sub)

    def _drop(self, sub: Subscriber) -> None:
        self._forget(sub)
        sub.dropped = True
        self.dropped += 1
        sub.end()
        log.warning("stream client of %s dropped: %d events behind", sub.user.name,
                    self.queue_size)

    def subscribe(self, user: User) -> Subscriber | None:
        """A new client, or None when ``max_clients`` are connected. A user who holds
        ``max_per_user`` streams already gets the new one and loses the oldest (told
        ``event: replaced``): a console reopened in the duty room wins over a tab left
        behind, and no user can take every slot (the others would get 503)."""
        mine = self._by_user.setdefault(user.name, [])
        while len(mine) >= self.max_per_user:
            old = mine[0]
            self._forget(old)
            old.replaced = True
            self.replaced += 1
            old.end()
            log.info("stream of %s replaced by a newer one (%d per user)", user.name,
                     self.max_per_user)
        if len(self._subscribers) >= self.max_clients:
            self.refused += 1
            return None
        sub = Subscriber(user, self.queue_size)
        self._subscribers.add(sub)
        self._by_user.setdefault(user.name, []).append(sub)
        return sub

    def streams_of(self, name: str) -> int:
        """How many streams user ``name`` holds."""
        return len(self._by_user.get(name, ()))

    def _forget(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        mine = self._by_user.get(sub.user.name)
        if mine is not None and sub in mine:
            mine.remove(sub)
            if not mine:
                del self._by_user[sub.user.name]

    def unsubscribe(self, sub: Subscriber) -> None:
        self._forget(sub)

    def close_all_soon(self) -> None:
        """:meth:`close_all` on the loop, from any thread."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed already
                loop.call_soon_threadsafe(self.close_all)

    def close_all(self) -> None:
        """End every client's stream (the server stops)."""
        for sub in list(self._subscribers):
            self._forget(sub)
            sub.end()

    async def frames(self, sub: Subscriber) -> AsyncIterator[bytes]:
        """What one client is sent, heartbeats included, until it is dropped or ended."""
        yield b"retry: 3000\n\n" + frame("hello", {"user": sub.user.to_json(),
                                                   "heartbeat_s": self.heartbeat_s})
        while True:
            try:
                item = await asyncio.wait_for(sub.queue.get(), self.heartbeat_s)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            if item is None:
                if sub.dropped:
                    yield frame("dropped", {"reason": "too slow: reconnect and reload"})
                elif sub.replaced:
                    yield frame("replaced", {"reason": f"{sub.user.name} opened a newer "
                                             f"stream ({self.max_per_user} at most per "
                                             "user): this one does not reconnect"})
                return
            sub.sent += 1
            yield item


class EventStream:
    """The ASGI response of one stream client: ends when the client goes away (watched on
    ``receive``, not only noticed at the next write), when it is dropped, or at shutdown."""

    def __init__(self, broadcaster: Broadcaster, sub: Subscriber) -> None:
        self.broadcaster = broadcaster
        self.sub = sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.sub

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.broadcaster.unsubscribe(sub)
            sub.end()

        watcher = asyncio.create_task(watch(), name="sse-disconnect")
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
            ]})
            async for chunk in self.broadcaster.frames(sub):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away mid-write
            pass
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.broadcaster.unsubscribe(sub)
