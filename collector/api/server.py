"""Serving the API in the collector: uvicorn on the collector's own asyncio loop (a named task
of :func:`collector.app.run`), or on a thread of its own (:meth:`ApiServer.start_thread`, for
:meth:`collector.app.Collector.start` in tests and benchmarks).

The server subscribes the :class:`~collector.api.stream.Broadcaster` to the alarm book while
it runs, and binds it to the loop it runs on. uvicorn's own signal handling is off (the
collector's ``run`` owns SIGTERM / SIGINT and stops the server through :meth:`stop`), its
access log is off (a stream ticket is in a query string) and it sends no ``Server`` header.
Behind a reverse proxy, ``[http] trusted_proxies`` names the proxies whose
``X-Forwarded-For`` is taken as the client's address (the audit's "from where").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import threading
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from collector.api.app import Book, ReadRegistry, create_app
from collector.api.config import HttpConfig
from collector.api.guard import ConnectionGuard, guarded_protocol
from collector.api.stream import Broadcaster

if TYPE_CHECKING:
    import uvicorn

__all__ = ["ApiServer", "ApiStartError"]

log = logging.getLogger("firegate.collector.api")


def _uvicorn_server(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server that leaves the signals to the collector.

    uvicorn is imported here, when a server is made, not when this module is: the package
    imports ``uvicorn.main`` and with it click, a command-line library the runtimes do not
    load otherwise (tests/test_layering.py). With ``[http]`` configured it is loaded, as
    uvicorn's own dependency; nothing of the collector uses it."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield  # the collector handles SIGTERM / SIGINT; uvicorn must not take them over

    return Server(config)


class ApiStartError(OSError):
    """The API cannot start: the message names the setting (``listen ...: ...``,
    ``cert_file / key_file: ...``)."""


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use or an address not on this machine is
    an error at start (OSError), not a log line from a server task later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ApiStartError(f"listen {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(False)
    return sock


class ApiServer:
    """uvicorn serving :func:`collector.api.app.create_app` for one collector.

    The socket is bound and the TLS files loaded in the constructor, so a bad ``[http]``
    (port in use, unreadable key) stops the collector at start (:class:`ApiStartError`).
    ``listen`` with port 0 takes a free port (:attr:`url` tells which)."""

    def __init__(self, config: HttpConfig, *, book: Book, registry: ReadRegistry,
                 extra_routes: Sequence[BaseRoute] = ()) -> None:
        self._socket = _bind(config.host, config.port)
        if config.port == 0:
            config = dataclasses.replace(config, port=int(self._socket.getsockname()[1]))
        self.config = config
        self.book = book
        self.broadcaster = Broadcaster(queue_size=config.stream_queue,
                                       max_clients=config.max_stream_clients,
                                       heartbeat_s=config.heartbeat_s,
                                       max_per_user=config.max_streams_per_user)
        self.app = create_app(book=book, registry=registry, config=config,
                              broadcaster=self.broadcaster, extra_routes=extra_routes)
        self.guard = ConnectionGuard(per_ip=config.max_connections_per_ip,
                                     header_timeout_s=config.header_timeout_s,
                                     exempt=config.trusted_proxies)
        self.app.state.connection_guard = self.guard
        import uvicorn

        uv = uvicorn.Config(
            self.app, host=config.host, port=config.port, log_level="warning",
            log_config=None,  # uvicorn's loggers go to the collector's handlers, its format
            access_log=False, server_header=False, lifespan="off",
            proxy_headers=bool(config.trusted_proxies),
            forwarded_allow_ips=list(config.trusted_proxies) or None,
            ssl_certfile=config.cert_file, ssl_keyfile=config.key_file,
            timeout_graceful_shutdown=2, ws="none",
            # Idle and half-sent connections do not hold slots (collector.api.guard).
            http=guarded_protocol(self.guard), timeout_keep_alive=config.keepalive_s,
            # uvicorn refuses once this many are open, the new one counted: + 1
            limit_concurrency=config.max_connections + 1)
        try:
            uv.load()  # the TLS context: a bad certificate or key fails here
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            self._socket.close()
            raise ApiStartError(f"cert_file / key_file ({config.cert_file}, "
                                f"{config.key_file}): cannot be loaded: {e}") from None
        except BaseException:
            self._socket.close()
            raise
        self._server = _uvicorn_server(uv)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def started(self) -> bool:
        return self._server.started

    @property
    def url(self) -> str:
        return self.config.base_url

    def stats(self) -> dict[str, object]:
        """For the collector's status snapshot: where it listens, stream clients, clients
        dropped (too slow) and refused (too many), refused tokens, since start."""
        b, auth = self.broadcaster, self.app.state.auth
        return {"url": self.url, "stream_clients": b.clients, "stream_dropped": b.dropped,
                "stream_refused": b.refused, "stream_replaced": b.replaced,
                "auth_refused": auth.refused, "tickets_refused": auth.tickets_refused,
                **self.guard.stats()}

    async def serve(self) -> None:
        """Serve until :meth:`stop` (the collector's ``http`` task)."""
        loop = asyncio.get_running_loop()
        self.broadcaster.bind(loop)
        unsubscribe: Callable[[], None] = self.book.subscribe(self.broadcaster.publish)
        try:
            await self._server.serve(sockets=[self._socket])
            if not self._server.started and not self._server.should_exit:
                raise OSError(f"the API could not listen on {self.config.host}:"
                              f"{self.config.port} (see the log)")
        finally:
            unsubscribe()
            self.broadcaster.bind(None)
            self.broadcaster.close_all()

    def stop(self) -> None:
        """Ask the server to finish (thread-safe): open streams end, then it returns."""
        self.broadcaster.close_all_soon()
        self._server.should_exit = True

    # -- on a thread of its own ---------------------------------------------------------------

    def start_thread(self, timeout: float = 30.0) -> ApiServer:
        """Serve on a thread with its own loop; returns once it listens (or raises)."""

        def main() -> None:
            try:
                asyncio.run(self.serve())
            except BaseException as exc:  # reported to start_thread / close
                self._error = exc

        self._thread = threading.Thread(target=main, name="http", daemon=True)
        self._thread.start()
        deadline = timeout
        while not self._server.started:
            self._thread.join(0.02)
            deadline -= 0.02
            if not self._thread.is_alive():
                raise RuntimeError(f"the API server did not start: {self._error!r}")
            if deadline <= 0:
                self.close()
                raise RuntimeError(f"the API server did not start within {timeout:.0f} s")
        log.info("API and console on %s", self.url)
        return self

    def close(self) -> None:
        """Stop the thread started by :meth:`start_thread` and release the socket
        (idempotent)."""
        if self._thread is not None:
            self.stop()
            self._thread.join(timeout=15)
            self._thread = None
        self._socket.close()
