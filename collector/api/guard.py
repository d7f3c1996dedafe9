"""Connections that send nothing cannot hold the API: a deadline for every request's head and
a cap per client address, below uvicorn (an ASGI middleware sees a request only once its head
is complete, too late for a socket that never sends one).

uvicorn counts every open connection against ``limit_concurrency`` (``[http]
max_connections``), idle ones too, and has no timeout before a connection's first request:
six silent sockets locked a five-connection API out (503) for as long as they stayed open.
The guard, one object per server, used by a subclass of uvicorn's h11 protocol made in
:func:`guarded_protocol`:

* **head deadline** (``header_timeout_s``): a connection whose request head is not complete
  this long after it opened, or after its previous response (a kept-alive connection dripping
  a byte at a time), is closed. A request being answered (a stream included) is never
  interrupted. Counted: :attr:`ConnectionGuard.idle_closed`;
* **per address** (``max_connections_per_ip``, the socket's peer address, not
  X-Forwarded-For): one more connection is answered 503 and closed at once, so one machine
  cannot take every slot. The ``trusted_proxies`` are exempt (behind a reverse proxy every
  client comes from it). Counted: :attr:`ConnectionGuard.refused_per_ip`;
* uvicorn's own keep-alive timeout (``keepalive_s``) closes an idle kept-alive connection.

A TLS client that never finishes its handshake is held by asyncio's handshake timeout (60 s)
and does not reach uvicorn's count meanwhile.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Sequence

__all__ = ["ConnectionGuard", "guarded_protocol"]

log = logging.getLogger("firegate.collector.api")


def _refusal(message: str) -> bytes:
    body = json.dumps({"error": {"status": 503, "code": "too_many_connections",
                                 "message": message}}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() +
            b"\r\n\r\n" + body)


class ConnectionGuard:
    """Open connections per address, the head deadline and their counters (used on the
    server's loop only)."""

    def __init__(self, *, per_ip: int, header_timeout_s: float,
                 exempt: Sequence[str] = ()) -> None:
        self.per_ip = per_ip
        self.header_timeout_s = header_timeout_s
        self._exempt = []
        for entry in exempt:
            try:
                self._exempt.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:  # a name or "*": not an address this cap can exempt
                continue
        self._open: dict[str, int] = {}
        self.refused_per_ip = 0
        """Connections refused because their address had ``per_ip`` open, since start."""
        self.idle_closed = 0
        """Connections closed for not completing a request head in time, since start."""
        self.refusal = _refusal(f"{per_ip} connections from this address are open; close "
                                "some or try again later")

    def _exempted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in self._exempt)

    def admit(self, ip: str) -> bool:
        """Count a new connection from ``ip``; False (not counted) when it is one too many."""
        n = self._open.get(ip, 0)
        if n >= self.per_ip and not self._exempted(ip):
            self.refused_per_ip += 1
            if self.refused_per_ip == 1 or self.refused_per_ip % 1000 == 0:
                log.warning("refused a connection from %s: %d open from it (%d refused "
                            "so far)", ip, n, self.refused_per_ip)
            return False
        self._open[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        n = self._open.get(ip, 0) - 1
        if n > 0:
            self._open[ip] = n
        else:
            self._open.pop(ip, None)

    def open_from(self, ip: str) -> int:
        return self._open.get(ip, 0)

    def stats(self) -> dict[str, int]:
        return {"connections_refused_per_ip": self.refused_per_ip,
                "connections_idle_closed": self.idle_closed}


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with ``guard`` applied (given to ``uvicorn.Config(http=...)``).

    uvicorn is imported here, when a server is made (see collector.api.server)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _guard_ip: str | None = None
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ip = self.client[0] if self.client else ""
            if not guard.admit(ip):
                transport.write(guard.refusal)
                transport.close()
                return
            self._guard_ip = ip
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._guard_ip is not None:
                guard.release(self._guard_ip)
                self._guard_ip = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._busy():  # a whole head arrived: the request is being answered
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and not self._busy():
                self._arm()  # the next request's head has the same deadline

        def _busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(guard.header_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self._busy() or self.transport.is_closing():
                return
            guard.idle_closed += 1
            self.transport.close()

    return GuardedH11Protocol
