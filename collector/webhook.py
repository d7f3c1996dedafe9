"""One webhook attempt: sign, POST, read a bounded answer, all within one deadline.

The queue, the lanes and the retries are :mod:`collector.notify`; this module is the single
request, so that its bounds can be read in one place:

* **Signature** (:func:`sign`): ``X-Firegate-Signature: t=<unix seconds>,v1=<hex>``, the hex
  HMAC-SHA256 of ``b"<t>." + body`` with the webhook's secret. The timestamp is signed with the
  body, so a receiver refuses a ``t`` outside its tolerance window and a captured request
  cannot be replayed later (the scheme Stripe and Slack use; docs/collector.md shows the
  check). ``t`` is taken at each attempt: a retry an hour later is not "old".
* **One deadline** per attempt, ``timeout_s`` in all: connect, send, status line, headers and
  body. A socket timeout alone bounds each ``recv``, not their sum, so a receiver dripping one
  byte a second would hold the lane for ever (issue 14); a timer shuts the socket down at the
  deadline, which ends whatever phase is blocked. (Name resolution cannot be interrupted this
  way; use an address or a local resolver for a webhook that must never stall.)
* **Bounded answer**: at most :data:`MAX_RESPONSE_BYTES` of the body are read; the rest is
  dropped with the connection (``Connection: close``: nothing is reused).
* **Every failure is a value**: a network error, the deadline, a malformed status line or a
  short body (``http.client.HTTPException``) is ``retry``; nothing here raises for what a
  receiver does. 2xx is ``sent``; 408, 429 and 5xx ``retry`` (``Retry-After`` in seconds
  kept); any other status, a redirect included, ``refused``.

:mod:`http.client` rather than urllib: urllib turns a redirected POST into a GET, and neither
exposes the socket to cut at a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import http.client
import math
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

__all__ = ["MAX_RESPONSE_BYTES", "USER_AGENT", "Attempt", "error_text", "post", "sign"]

USER_AGENT = "firegate-collector"
MAX_RESPONSE_BYTES = 64 * 1024
"""A receiver's answer body is read up to this and no further (its status is what counts)."""
RETRY_STATUS = frozenset({408, 429})


class Attempt(NamedTuple):
    """The outcome of one POST."""

    outcome: str
    """``sent``, ``retry`` or ``refused``."""
    error: str | None = None
    retry_after: float | None = None
    """The receiver's ``Retry-After`` in seconds, if it gave one (408, 429, 5xx)."""


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Firegate-Signature`` value: ``t=<unix s>,v1=<hex HMAC-SHA256(t + "." + body)>``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()  # certificate and host name verified


def error_text(e: BaseException) -> str:
    """``Type: message``, at most 200 characters, control characters shown escaped (a
    receiver's garbage status line is echoed in the message, then in logs and status)."""
    text = f"{type(e).__name__}: {e}"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:200]


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Attempt:
    """POST ``body`` to ``url`` and read the answer, all within ``timeout_s``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        port = parts.port
    except ValueError as e:
        return Attempt("refused", error_text(e))
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection(host, port, timeout=timeout_s, context=_tls())
        if parts.scheme == "https" else http.client.HTTPConnection(host, port, timeout=timeout_s))
    cut = threading.Event()

    def deadline() -> None:
        cut.set()
        sock = conn.sock
        if sock is not None:
            # The plain socket's shutdown, also under TLS: SSLSocket.shutdown would tear down
            # the TLS object under the reading thread; this only ends the blocked recv/send.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    timer = threading.Timer(timeout_s, deadline)
    timer.daemon = True
    timer.start()
    try:
        conn.request("POST", target, body=body,
                     headers={**headers, "Connection": "close", "User-Agent": USER_AGENT})
        response = conn.getresponse()
        data = response.read(MAX_RESPONSE_BYTES)
        if len(data) < MAX_RESPONSE_BYTES and response.length:
            # read(n) returns what came before the connection closed; read() would raise.
            raise http.client.IncompleteRead(data, response.length)
        status = response.status
        retry_after = _retry_after(response.getheader("Retry-After"))
    except (OSError, http.client.HTTPException, ValueError) as e:
        # OSError: refused, reset, timeouts, TLS; HTTPException: a malformed status line, a
        # short body, too many headers; after the deadline, whichever the cut caused.
        return Attempt("retry", f"no complete answer within {timeout_s:g} s ({error_text(e)})"
                       if cut.is_set() else error_text(e))
    finally:
        timer.cancel()
        conn.close()
    if cut.is_set():
        # The cut can also look like the end of the headers or of a body without a length:
        # what was read is not an answer.
        return Attempt("retry", f"no complete answer within {timeout_s:g} s")
    if 200 <= status < 300:
        return Attempt("sent")
    if status in RETRY_STATUS or status >= 500:
        return Attempt("retry", f"HTTP {status}", retry_after)
    return Attempt("refused", f"HTTP {status}")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from webhook receivers; the back-off applies
    return None if math.isnan(seconds) else max(0.0, seconds)
