"""Thousands of paho clients on one asyncio loop, without a thread per client.

paho-mqtt 2.x lets an application own the event loop: it reports its socket through
``on_socket_open``/``on_socket_close`` and asks for write readiness through
``on_socket_register_write``/``on_socket_unregister_write``; the application then calls
``loop_read()``, ``loop_write()`` and, about once a second, ``loop_misc()`` (keep-alive).
:class:`SocketBridge` maps those onto ``loop.add_reader``/``add_writer`` and one shared
``loop_misc`` timer for all clients.

paho re-raises exceptions from user callbacks out of ``loop_read``; asyncio would only log an
exception escaping a reader callback, so the bridge hands it to ``on_error`` (the fleet stops
with it) instead of letting a bug look like a quiet gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ["SocketBridge"]

MISC_INTERVAL = 1.0  # seconds between loop_misc() rounds (paho's own loop uses 1 s too)


class SocketBridge:
    """Drives the sockets of attached paho clients from ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_error: Callable[[BaseException], None]) -> None:
        self._loop = loop
        self._on_error = on_error
        self._open: dict[mqtt.Client, mqtt.SocketLike] = {}
        self._misc: asyncio.TimerHandle | None = None

    def attach(self, client: mqtt.Client) -> None:
        """Route ``client``'s socket through this loop (before its connect)."""
        client.on_socket_open = self._opened
        client.on_socket_close = self._closed
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._wrote

    @property
    def open_sockets(self) -> int:
        return len(self._open)

    def start(self) -> None:
        if self._misc is None:
            self._misc = self._loop.call_later(MISC_INTERVAL, self._misc_round)

    def stop(self) -> None:
        """Stop the keep-alive timer and close every socket still open (no DISCONNECT)."""
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        for client in list(self._open):
            self.force_close(client)

    def force_close(self, client: mqtt.Client) -> None:
        """Close ``client``'s socket at once, without paho: for the end of a run only."""
        sock = self._open.pop(client, None)
        # Detach first: paho closes its socket again when the client is garbage-collected,
        # and would call back into a loop that may be closed by then.
        client.on_socket_open = client.on_socket_close = None
        client.on_socket_register_write = client.on_socket_unregister_write = None
        if sock is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            sock.close()

    # -- paho callbacks ---------------------------------------------------------------------

    def _opened(self, client: mqtt.Client, _userdata: Any, sock: mqtt.SocketLike) -> None:
        self._open[client] = sock
        self._loop.add_reader(sock, self._readable, client, sock)

    def _closed(self, client: mqtt.Client, _userdata: Any, sock: mqtt.SocketLike) -> None:
        if self._open.pop(client, None) is None:
            return  # never registered, or already force-closed
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)

    def _want_write(self, client: mqtt.Client, _userdata: Any, sock: mqtt.SocketLike) -> None:
        self._loop.add_writer(sock, self._writable, client)

    def _wrote(self, _client: mqtt.Client, _userdata: Any, sock: mqtt.SocketLike) -> None:
        self._loop.remove_writer(sock)

    # -- readiness --------------------------------------------------------------------------

    def _readable(self, client: mqtt.Client, sock: mqtt.SocketLike) -> None:
        try:
            client.loop_read()
            # TLS decrypts whole records: bytes may wait inside the SSL object while the
            # descriptor is no longer readable, so read on until they are consumed.
            pending: Callable[[], int] | None = getattr(sock, "pending", None)
            if pending is not None and client.socket() is sock and pending() > 0:
                self._loop.call_soon(self._readable, client, sock)
        except Exception as e:  # a bug in a callback: stop the run with it
            self._on_error(e)

    def _writable(self, client: mqtt.Client) -> None:
        try:
            client.loop_write()
        except Exception as e:
            self._on_error(e)

    def _misc_round(self) -> None:
        try:
            for client in list(self._open):
                client.loop_misc()
        except Exception as e:
            self._on_error(e)
        self._misc = self._loop.call_later(MISC_INTERVAL, self._misc_round)
