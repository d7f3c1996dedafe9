"""``[http]`` and ``[[user]]``: where the API and the console listen, and who may use them.

Validated here and nowhere else (the collector's config calls :func:`parse_http`); nothing
opens a socket. The rules, each with its reason:

* a token is at least :data:`MIN_TOKEN_CHARS` characters (``token``, ``token_file`` or
  ``token_env``; the error never echoes it) and no two users share one: a token *is* the
  identity in the audit log;
* ``listen`` on an address that is not loopback needs ``cert_file`` + ``key_file`` (TLS),
  or ``allow_plaintext = true``: the bearer tokens would otherwise cross the network readable
  (the project's rule for MQTT passwords, ``common.config.Table.refuse_plaintext``). Behind a
  reverse proxy that terminates TLS, listen on loopback;
* ``[[user]]`` without ``[http]`` and ``[http]`` without any ``[[user]]`` are refused: the
  first would be ignored silently, the second would answer 401 to everyone.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from common.config import ConfigError, Table, is_loopback

__all__ = ["MAX_LIMIT", "MIN_TOKEN_CHARS", "ROLES", "HttpConfig", "UserConfig", "parse_http"]

ROLES = ("viewer", "operator", "admin")
"""Each role can do what the one before it can: viewer reads, operator also acknowledges
and resolves, admin also reads the audit log."""
MIN_TOKEN_CHARS = 32
MAX_LIMIT = 2_000
"""The highest ``max_limit``: 2,000 alarms are ~1.3 MB of JSON and ~20 ms to encode on a small
machine (bench/bench_api.py); more in one answer would hold a worker thread for seconds under
load. Clients page (``before_ms``/``before_id``) instead."""
TOKEN_HINT = "make one with `openssl rand -hex 32`"
USER_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
USER_HINT = "1-64 chars of A-Z a-z 0-9 _ . @ -, starting with a letter or digit"
SITE_GLOB_PATTERN = r"[A-Za-z0-9_.*?\[\]!-]{1,64}"


@dataclass(frozen=True, slots=True)
class UserConfig:
    """One ``[[user]]``."""

    name: str
    token: str = field(repr=False)
    """Never logged, never in ``repr``."""
    role: str = "viewer"
    sites: tuple[str, ...] = ("*",)
    """fnmatch globs (case-sensitive) of the site ids this user sees; default all."""


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """``[http]`` with its users; None in CollectorConfig when there is no ``[http]``."""

    host: str
    port: int
    users: tuple[UserConfig, ...] = ()
    cert_file: Path | None = None
    key_file: Path | None = None
    allow_plaintext: bool = False
    public_url: str | None = None
    """The console's address as people reach it (links in notifications); None: unknown."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses whose ``X-Forwarded-For`` is believed (the audit's "from where")."""
    max_body_bytes: int = 16_384
    max_note_chars: int = 1_000
    max_limit: int = 1_000
    """The largest ``limit`` a list accepts (the default is 500; at most :data:`MAX_LIMIT`:
    one answer stays tens of milliseconds, a client pages on with ``before_ms``)."""
    stream_queue: int = 1_000
    """Events waiting for one stream client; a client that falls this far behind is dropped."""
    max_stream_clients: int = 200
    max_streams_per_user: int = 4
    """Streams one user may hold at once; a new one past it closes that user's oldest (a
    console reopened in the duty room wins over the tab left behind), so one user cannot
    take the slots of the others."""
    tickets_per_minute: int = 60
    """Stream tickets one user may be issued in any 60 s; past it 429 with Retry-After."""
    max_connections: int = 1000
    """Open connections at once (streams included); past it uvicorn answers 503."""
    max_connections_per_ip: int = 64
    """Open connections from one address (its socket's, not X-Forwarded-For; the
    ``trusted_proxies`` are exempt); past it a new one is answered 503 and closed."""
    header_timeout_s: float = 10.0
    """How long a connection may wait before its request's head is complete (a new one, or
    one kept alive after a response); then it is closed. Idle sockets cannot hold the
    ``max_connections`` slots longer than this."""
    keepalive_s: int = 5
    """uvicorn's keep-alive: an idle kept-alive connection is closed after this (whole
    seconds, uvicorn's type)."""
    heartbeat_s: float = 15.0
    ticket_ttl_s: float = 60.0
    """How long a stream ticket (``POST /api/v1/stream-ticket``) can be used to connect."""

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    @property
    def base_url(self) -> str:
        """Where this server answers (not the public URL)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def _listen(t: Table) -> tuple[str, int]:
    listen = t.text("listen", "127.0.0.1:8080")
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65_535:
        t.fail("listen", f"must be HOST:PORT (IPv6 as [::1]:8080), got {listen!r}")
    return host, int(port)


def _user(t: Table, index: int) -> UserConfig:
    name = t.text("name", pattern=USER_PATTERN, hint=USER_HINT)
    token = t.secret("token", min_bytes=1, hint=TOKEN_HINT)
    if token is None:
        t.fail("token", "is required (token, token_file or token_env); " + TOKEN_HINT)
    if len(token) < MIN_TOKEN_CHARS:
        t.fail("token", f"must be at least {MIN_TOKEN_CHARS} characters, got {len(token)} "
                        f"({TOKEN_HINT})")
    if any(c.isspace() or not c.isprintable() for c in token):
        t.fail("token", "must not contain white space or control characters")
    role = t.one_of("role", ROLES, "viewer")
    sites = t.texts("sites", ["*"])
    if not sites:
        t.fail("sites", 'must name at least one site or glob (["*"] for all)')
    for s in sites:
        if re.fullmatch(SITE_GLOB_PATTERN, s) is None:
            t.fail("sites", f"{s!r} is not a site id or glob (A-Z a-z 0-9 _ . - and * ? [ ])")
    t.finish()
    return UserConfig(name, token, role, tuple(sites))


def parse_http(http: Table | None, users: Sequence[Table]) -> HttpConfig | None:
    """Validate ``[http]`` and every ``[[user]]``; None without ``[http]``."""
    if http is None:
        if users:
            raise ConfigError("user", "[[user]] needs an [http] section (the API is off "
                                      "without it)")
        return None
    host, port = _listen(http)
    cert_file = http.path_value("cert_file", None, must_exist=True)
    key_file = http.path_value("key_file", None, must_exist=True)
    if (cert_file is None) != (key_file is None):
        http.fail("cert_file", "cert_file and key_file go together")
    allow_plaintext = http.flag("allow_plaintext", False)
    if cert_file is None and not allow_plaintext and not is_loopback(host):
        http.fail("listen", f"{host} is not a loopback address: bearer tokens would cross the "
                            "network unencrypted; give cert_file and key_file (TLS), listen on "
                            "127.0.0.1 behind a TLS reverse proxy, or set allow_plaintext = "
                            "true in [http] to accept that risk")
    public_url = http.opt_text("public_url", max_len=512)
    if public_url is not None:
        http.refuse_url_credentials("public_url", public_url, "nothing (links carry no "
                                                              "credentials)")
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            http.fail("public_url", f"must be an http:// or https:// URL, got {public_url!r}")
        public_url = public_url.rstrip("/")
    config = HttpConfig(
        host=host, port=port, cert_file=cert_file, key_file=key_file,
        allow_plaintext=allow_plaintext, public_url=public_url,
        trusted_proxies=tuple(http.texts("trusted_proxies", [])),
        max_body_bytes=http.integer("max_body_bytes", 16_384, min=256, max=1_048_576),
        max_note_chars=http.integer("max_note_chars", 1_000, min=1, max=100_000),
        max_limit=http.integer("max_limit", 1_000, min=1, max=MAX_LIMIT),
        stream_queue=http.integer("stream_queue", 1_000, min=8, max=1_000_000),
        max_stream_clients=http.integer("max_stream_clients", 200, min=1, max=100_000),
        max_streams_per_user=http.integer("max_streams_per_user", 4, min=1, max=1_000),
        tickets_per_minute=http.integer("tickets_per_minute", 60, min=1, max=100_000),
        max_connections=http.integer("max_connections", 1000, min=2, max=1_000_000),
        max_connections_per_ip=http.integer("max_connections_per_ip", 64, min=1,
                                            max=1_000_000),
        header_timeout_s=http.number("header_timeout_s", 10.0, min=0.1, max=300.0),
        keepalive_s=http.integer("keepalive_s", 5, min=1, max=300),
        heartbeat_s=http.number("heartbeat_s", 15.0, min=0.05, max=3600.0),
        ticket_ttl_s=http.number("ticket_ttl_s", 60.0, min=1.0, max=3600.0),
    )
    if config.max_connections <= config.max_stream_clients:
        http.fail("max_connections", f"must be more than max_stream_clients "
                                     f"({config.max_stream_clients}): streams would leave no "
                                     "connection for the other calls")
    if config.max_connections_per_ip > config.max_connections:
        http.fail("max_connections_per_ip", f"must be at most max_connections "
                                            f"({config.max_connections})")
    http.finish()
    parsed = tuple(_user(t, i) for i, t in enumerate(users))
    if not parsed:
        raise ConfigError("http", "needs at least one [[user]] with a token (nobody could "
                                  "use the API otherwise)")
    for i, u in enumerate(parsed):
        for j, other in enumerate(parsed[:i]):
            if other.name == u.name:
                raise ConfigError(f"user[{i}].name", f"{u.name!r} is used twice")
            if other.token == u.token:
                raise ConfigError(f"user[{i}].token", f"the same token as user[{j}] "
                                  f"({other.name}): each user needs a token of their own")
    return dataclasses.replace(config, users=parsed)
