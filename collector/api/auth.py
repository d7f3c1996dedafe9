"""Who is calling: bearer tokens, roles, site scopes, stream tickets and the API's errors.

Every route calls :func:`require` first (route modules of other areas too, e.g.
``collector/uitd/routes.py``): it answers 401 without a valid token and 403 when the user's
role is below the route's, and hands back the :class:`User`; :meth:`User.sees` is the site
scope every route applies to what it reads and acts on.

Tokens are compared in constant time over **all** users (:meth:`Authenticator.user_for`):
the SHA-256 of the presented token against the SHA-256 of each user's, with
``hmac.compare_digest`` and no early exit, so neither the position of the matching user nor
the length of a wrong token shows in the time of the answer. Tokens are never logged: the
log names the user, or says that a token was refused.

``EventSource`` cannot send headers, so the console first trades its token for a short-lived
**ticket** (``POST /api/v1/stream-ticket``): the user's name and an expiry, signed with
HMAC-SHA256 under a key made at start (never stored). A ticket opens the stream only, once,
within ``ticket_ttl_s`` seconds; a leaked one (a proxy's access log) is worthless once used
or soon after, and the role and sites are read again from the config when it is used.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from collector.api.config import ROLES, UserConfig

__all__ = ["ApiError", "Authenticator", "User", "error_response", "require"]

log = logging.getLogger("firegate.collector.api")
_RANK = {r: i for i, r in enumerate(ROLES)}
MAX_SPENT_TICKETS = 100_000
"""Used tickets remembered until they expire; past this many unexpired ones, tickets are
refused (401) until some expire: the memory stays bounded whatever a client does."""


@dataclass(frozen=True, slots=True)
class User:
    """An authenticated caller (no token inside)."""

    name: str
    role: str
    sites: tuple[str, ...]

    def may(self, role: str) -> bool:
        """True when this user's role includes ``role``."""
        return _RANK[self.role] >= _RANK[role]

    def sees(self, site: str) -> bool:
        """True when ``site`` is in this user's scope (fnmatch globs, case-sensitive)."""
        return any(fnmatch.fnmatchcase(site, glob) for glob in self.sites)

    @property
    def all_sites(self) -> bool:
        return "*" in self.sites

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role, "sites": list(self.sites)}


class ApiError(HTTPException):
    """An error answered as ``{"error": {"status", "code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, message, headers=dict(headers) if headers else None)
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "code": code, "message": message}},
                        status_code=status, headers=dict(headers) if headers else None)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Authenticator:
    """The configured users, looked up by token in constant time; stream tickets."""

    def __init__(self, users: Sequence[UserConfig], *, ticket_ttl_s: float = 60.0,
                 tickets_per_minute: int = 60) -> None:
        self._users = [(_digest(u.token), User(u.name, u.role, u.sites)) for u in users]
        self._by_name = {user.name: user for _, user in self._users}
        self._ticket_key = secrets.token_bytes(32)
        self.ticket_ttl_s = ticket_ttl_s
        self._spent: dict[str, float] = {}
        """Nonces of the tickets used, until they expire (a ticket opens one stream)."""
        self.refused = 0
        """Calls refused for a missing or wrong token or ticket (401), since start."""
        self.tickets_per_minute = tickets_per_minute
        self._issued: dict[str, deque[float]] = {}
        """Per user, when its tickets of the last 60 s were issued (at most
        ``tickets_per_minute`` each: bounded by the configured users)."""
        self.tickets_refused = 0
        """Tickets refused for ``tickets_per_minute`` (429), since start."""

    def ticket_wait(self, user: User, now: float | None = None) -> float:
        """0 when ``user`` may have another ticket now (and it is counted), else how many
        seconds until one is allowed. Tickets are not free: each used one is remembered
        until it expires, so a client minting them without end would fill that memory and
        take stream slots; ``tickets_per_minute`` per user bounds both."""
        at = time.monotonic() if now is None else now
        issued = self._issued.setdefault(user.name, deque())
        while issued and issued[0] <= at - 60.0:
            issued.popleft()
        if len(issued) >= self.tickets_per_minute:
            self.tickets_refused += 1
            return max(0.001, issued[0] + 60.0 - at)
        issued.append(at)
        return 0.0

    def user_for(self, token: str) -> User | None:
        """The user whose token this is, or None; the same work whoever matches."""
        presented = _digest(token)
        found: User | None = None
        for digest, user in self._users:
            if hmac.compare_digest(presented, digest):  # no break: every user is compared
                found = user
        return found

    def issue_ticket(self, user: User, now: float | None = None) -> tuple[str, float]:
        """A ticket for ``user``'s stream and its lifetime in seconds."""
        expires = (time.time() if now is None else now) + self.ticket_ttl_s
        body = base64.urlsafe_b64encode(json.dumps(
            {"u": user.name, "exp": round(expires, 3), "n": secrets.token_hex(8)},
            separators=(",", ":")).encode()).rstrip(b"=")
        mac = base64.urlsafe_b64encode(hmac.new(self._ticket_key, body, hashlib.sha256)
                                       .digest()).rstrip(b"=")
        return f"{body.decode()}.{mac.decode()}", self.ticket_ttl_s

    def user_for_ticket(self, ticket: str, now: float | None = None) -> User | None:
        """The user a valid, unexpired ticket was issued to, or None."""
        body, sep, mac = ticket.encode("ascii", "replace").partition(b".")
        if not sep or len(ticket) > 512:
            return None
        expected = base64.urlsafe_b64encode(hmac.new(self._ticket_key, body, hashlib.sha256)
                                            .digest()).rstrip(b"=")
        if not hmac.compare_digest(expected, mac):
            return None
        try:
            doc = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
            name, expires, nonce = doc["u"], float(doc["exp"]), str(doc["n"])
        except (ValueError, KeyError, TypeError):
            return None
        at = time.time() if now is None else now
        if at > expires:
            return None
        self._spent = {n: e for n, e in self._spent.items() if e >= at} \
            if len(self._spent) > MAX_SPENT_TICKETS // 2 else self._spent
        if nonce in self._spent or len(self._spent) >= MAX_SPENT_TICKETS:
            return None
        self._spent[nonce] = expires
        return self._by_name.get(name)


def _unauthorized(auth: Authenticator, message: str) -> ApiError:
    auth.refused += 1
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="firegate"'})


def authenticate(conn: HTTPConnection) -> User:
    """The caller of ``conn`` by its ``Authorization: Bearer`` header; ApiError 401."""
    auth: Authenticator = conn.app.state.auth
    header = conn.headers.get("authorization")
    if header is None:
        raise _unauthorized(auth, "an Authorization: Bearer <token> header is required")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized(auth, "the Authorization header must be 'Bearer <token>'")
    user = auth.user_for(token)
    if user is None:
        log.info("refused a wrong token from %s", conn.client.host if conn.client else "?")
        raise _unauthorized(auth, "the token is not valid")
    return user


def check_role(user: User, role: str) -> None:
    if not user.may(role):
        raise ApiError(403, "forbidden", f"needs the {role} role; {user.name} is {user.role}")


def check_site(user: User, site: str) -> None:
    if not user.sees(site):
        raise ApiError(403, "forbidden", f"site {site!r} is outside {user.name}'s sites")


def require(conn: HTTPConnection, role: str = "viewer") -> User:
    """The authenticated caller, who must have ``role`` (``viewer``, ``operator``,
    ``admin``): ApiError 401 without a valid token, 403 below the role."""
    user = authenticate(conn)
    check_role(user, role)
    return user


def require_ticket(conn: HTTPConnection, role: str = "viewer") -> User:
    """The stream's caller: a ``ticket`` query parameter or the bearer header."""
    ticket = conn.query_params.get("ticket")
    if ticket is None:
        return require(conn, role)
    auth: Authenticator = conn.app.state.auth
    user = auth.user_for_ticket(ticket)
    if user is None:
        raise _unauthorized(auth, "the stream ticket is not valid or has expired; ask "
                                  "POST /api/v1/stream-ticket for a new one")
    check_role(user, role)
    return user
