"""The Starlette application: the API's routes, the console's files, errors and headers.

:func:`create_app` builds it from the alarm book, a view of the registry and ``[http]``;
:mod:`collector.api.server` serves it with uvicorn. Every ``/api/v1`` route starts with
:func:`collector.api.auth.require` (401, 403) and applies the user's sites to what it reads
and does; the book's calls run in a worker thread (the writer thread may hold its lock for a
write), so the event loop keeps serving the stream meanwhile. ``docs/api.md`` is the guide;
the OpenAPI document (:mod:`collector.api.openapi`) lists every route.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector.alarms.book import STATES, AlarmBook
from collector.alarms.model import VERDICTS, Alarm, AlarmConflict, AlarmNotFound
from collector.api.auth import (
    ApiError,
    Authenticator,
    User,
    check_site,
    error_response,
    require,
    require_ticket,
)
from collector.api.config import HttpConfig
from collector.api.jsonview import alarm_json, alarms_body
from collector.api.openapi import openapi_document
from collector.api.stream import Broadcaster, EventStream
from collector.registry import RegistryView

__all__ = ["CONSOLE_DIR", "Book", "ReadRegistry", "create_app"]

Book = AlarmBook

log = logging.getLogger("firegate.collector.api")
CONSOLE_DIR = Path(__file__).with_name("console")
CONSOLE_FILES = {"app.js": "text/javascript; charset=utf-8",
                 "style.css": "text/css; charset=utf-8",
                 "favicon.svg": "image/svg+xml"}
DEFAULT_LIMIT = 500
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_ALARM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_REFUSED_IN_NOTE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u206f\ufeff]")
"""Refused in notes (a tab and line breaks are fine): C0 and C1 controls and DEL (a terminal
takes ESC or 0x9B as the start of a command), the line and paragraph separators, the
bidirectional marks, embeddings, overrides and isolates (U+202A-202E, U+2066-2069: a U+202E
shows "…ydal" for "lady…", a location or name read backwards) and the zero-width and
invisible characters (U+200B-200F, U+2060-2064, U+FEFF) that hide text or make two notes look
alike. The console shows the same set visibly in what it did not write (app.js ``visible``)."""


ReadRegistry = Callable[[], RegistryView]
"""The registry's :meth:`~collector.registry.Registry.view`: copies of its sites and gateways,
safe to read on the API's thread."""


# -- helpers -----------------------------------------------------------------------------------


def _query(request: Request, allowed: Sequence[str]) -> dict[str, str]:
    """The query parameters, each at most once and all known (a typo is an error, not a
    silently ignored filter)."""
    out: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            raise ApiError(400, "bad_request", f"unknown query parameter {key!r}; allowed: "
                                               f"{', '.join(allowed) or 'none'}")
        if key in out:
            raise ApiError(400, "bad_request", f"query parameter {key!r} given twice")
        out[key] = value
    return out


def _int(params: dict[str, str], key: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = params.get(key)
    if raw is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,19}", raw) or not lo <= int(raw) <= hi:
        raise ApiError(400, "bad_request", f"{key} must be an integer from {lo} to {hi}, "
                                           f"got {raw[:40]!r}")
    return int(raw)


async def _body(request: Request, allowed: Sequence[str]) -> dict[str, Any]:
    """The JSON object of a POST, bounded by ``max_body_bytes``; ``{}`` for an empty body."""
    config: HttpConfig = request.app.state.config
    limit = config.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise ApiError(413, "too_large", f"the body must be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    # The whole body within the head's deadline: a client dripping it a byte at a time would
    # otherwise hold a connection (and a slot of its address) as long as it likes.
    try:
        async with asyncio.timeout(config.header_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "too_large", f"the body must be at most {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "timeout", f"the body did not arrive within "
                                       f"{config.header_timeout_s:g} s") from None
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field {unknown[0][:40]!r}; allowed: "
                                           f"{', '.join(allowed)}")
    return doc


def _note(request: Request, doc: dict[str, Any]) -> str | None:
    note = doc.get("note")
    if note is None:
        return None
    limit = request.app.state.config.max_note_chars
    if not isinstance(note, str):
        raise ApiError(400, "bad_request", "note must be a string")
    if len(note) > limit:
        raise ApiError(400, "bad_request", f"note must be at most {limit} characters, "
                                           f"got {len(note)}")
    bad = _REFUSED_IN_NOTE.search(note)
    if bad is not None:
        raise ApiError(400, "bad_request", f"note must not contain U+{ord(bad.group()):04X} "
                                           f"(a control, bidirectional or invisible "
                                           f"character) at position {bad.start()}")
    return note.strip() or None


def _origin(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _book(request: Request) -> Book:
    book: Book = request.app.state.book
    return book


async def _visible_alarm(request: Request, user: User) -> Alarm:
    alarm_id = request.path_params["alarm_id"]
    alarm = await run_in_threadpool(_book(request).get, alarm_id)
    if alarm is None:
        raise ApiError(404, "not_found", f"no alarm {alarm_id[:64]!r}")
    check_site(user, alarm.site)
    return alarm


def _json(data: object, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


# -- the routes --------------------------------------------------------------------------------


async def list_alarms(request: Request) -> Response:
    user = require(request)
    config: HttpConfig = request.app.state.config
    q = _query(request, ("state", "site", "acknowledged", "limit", "before_ms", "before_id"))
    state = q.get("state", "active")
    if state not in STATES:
        raise ApiError(400, "bad_request", f"state must be one of {', '.join(STATES)}")
    site = q.get("site") or None
    if site is not None:
        check_site(user, site)
    acknowledged: bool | None = None
    if "acknowledged" in q:
        if q["acknowledged"] not in ("true", "false"):
            raise ApiError(400, "bad_request", "acknowledged must be true or false")
        acknowledged = q["acknowledged"] == "true"
    limit = _int(q, "limit", min(DEFAULT_LIMIT, config.max_limit), 1, config.max_limit)
    assert limit is not None
    # The page after (before_ms, before_id): the last alarm of the previous page ("next").
    before_ms = _int(q, "before_ms", None, 0, 2**62)
    before_id = q.get("before_id")
    if before_id is not None and (before_ms is None or not _ALARM_ID.fullmatch(before_id)):
        raise ApiError(400, "bad_request", "before_id must be an alarm id, given with before_ms")
    alarms = await run_in_threadpool(
        lambda: _book(request).list(state=state, site=site,
                                    sites=None if user.all_sites else user.sees,
                                    acknowledged=acknowledged, limit=limit,
                                    before_ms=before_ms, before_id=before_id))
    more = len(alarms) == limit  # perhaps more: the client asks for the next page
    last = alarms[-1] if more else None
    body = alarms_body(alarms, {"next": None if last is None else {
        "before_ms": last.raised_ms, "before_id": last.id}})
    return Response(body, media_type="application/json")


async def get_alarm(request: Request) -> Response:
    user = require(request)
    alarm = await _visible_alarm(request, user)
    timeline = await run_in_threadpool(_book(request).timeline, alarm.id)
    return _json({**alarm_json(alarm), "timeline": [t.to_json() for t in timeline]})


async def acknowledge(request: Request) -> Response:
    user = require(request, "operator")
    doc = await _body(request, ("note",))
    note = _note(request, doc)
    alarm = await _visible_alarm(request, user)
    origin = _origin(request)
    try:
        done = await run_in_threadpool(lambda: _book(request).acknowledge(
            alarm.id, by=user.name, note=note, origin=origin))
    except AlarmNotFound:
        raise ApiError(404, "not_found", f"no alarm {alarm.id!r}") from None
    except AlarmConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    log.info("alarm %s acknowledged by %s from %s", alarm.id, user.name, origin)
    return _json(alarm_json(done))


async def resolve(request: Request) -> Response:
    user = require(request, "operator")
    doc = await _body(request, ("verdict", "note"))
    verdict = doc.get("verdict")
    if verdict not in VERDICTS:
        raise ApiError(400, "bad_request", f"verdict is required: one of {', '.join(VERDICTS)}")
    note = _note(request, doc)
    alarm = await _visible_alarm(request, user)
    origin = _origin(request)
    try:
        done = await run_in_threadpool(lambda: _book(request).resolve(
            alarm.id, verdict=verdict, by=user.name, note=note, origin=origin))
    except AlarmNotFound:
        raise ApiError(404, "not_found", f"no alarm {alarm.id!r}") from None
    except AlarmConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    log.info("alarm %s resolved (%s) by %s from %s", alarm.id, verdict, user.name, origin)
    return _json(alarm_json(done))


async def list_sites(request: Request) -> Response:
    user = require(request)
    _query(request, ())
    registry: ReadRegistry = request.app.state.registry
    view = await run_in_threadpool(registry)
    sites, gateways = view.sites.values(), view.gateways.values()
    counts = await run_in_threadpool(_book(request).open_counts)
    by_id = {s.id: s for s in sites}
    online: dict[str, int] = {}
    offline: dict[str, int] = {}
    for gw in gateways:
        site = gw.site or gw.id  # a gateway without a site is its own (collector.effects)
        if gw.state == "online":
            online[site] = online.get(site, 0) + 1
        elif gw.state == "offline":
            offline[site] = offline.get(site, 0) + 1
    out = []
    for site in sorted(set(by_id) | set(online) | set(offline) | set(counts)):
        if not user.sees(site):
            continue
        info = by_id.get(site)
        out.append({"id": site, "colour": info.colour if info else None,
                     "reasons": list(info.reasons) if info else [],
                     "since_ms": info.since_ms if info else None,
                     "updated_ms": info.updated_ms if info else None,
                     "open_alarms": counts.get(site, 0),
                     "gateways_online": online.get(site, 0),
                     "gateways_offline": offline.get(site, 0)})
    return _json({"sites": out})


async def list_gateways(request: Request) -> Response:
    user = require(request)
    _query(request, ())
    registry: ReadRegistry = request.app.state.registry
    gateways = (await run_in_threadpool(registry)).gateways.values()
    return _json({"gateways": [asdict(gw) for gw in sorted(gateways, key=lambda g: g.id)
                               if user.sees(gw.site or gw.id)]})


async def audit(request: Request) -> Response:
    user = require(request, "admin")
    config: HttpConfig = request.app.state.config
    q = _query(request, ("limit", "before_ms", "before_seq"))
    limit = _int(q, "limit", min(DEFAULT_LIMIT, config.max_limit), 1, config.max_limit)
    before = _int(q, "before_ms", None, 0, 2**62)
    # The page after (before_ms, before_seq): the last entry of the previous page ("next").
    # before_ms alone would skip the entries of that millisecond not on the previous page.
    before_seq = _int(q, "before_seq", None, 0, 2**62)
    if before_seq is not None and before is None:
        raise ApiError(400, "bad_request", "before_seq must be given with before_ms")
    assert limit is not None
    book = _book(request)
    # The user's sites are applied in the query, before the limit: a page is short only at
    # the end of the log, never because other sites' entries took its places.
    entries = await run_in_threadpool(lambda: book.audit(
        limit=limit, before_ms=before, before_seq=before_seq,
        sites=None if user.all_sites else user.sees))
    last = entries[-1] if len(entries) == limit else None  # perhaps more: the next page
    return _json({"audit": [e.to_json() for e in entries],
                  "next": None if last is None else {"before_ms": last.at_ms,
                                                     "before_seq": last.seq}})


async def me(request: Request) -> Response:
    user = require(request)
    return _json(user.to_json())


async def stream_ticket(request: Request) -> Response:
    user = require(request)
    auth: Authenticator = request.app.state.auth
    wait_s = auth.ticket_wait(user)
    if wait_s > 0:
        raise ApiError(429, "too_many_requests",
                       f"{user.name} was issued {auth.tickets_per_minute} stream tickets in the "
                       f"last minute; try again in {wait_s:.0f} s",
                       {"Retry-After": str(max(1, round(wait_s + 0.5)))})
    ticket, ttl = auth.issue_ticket(user)
    return _json({"ticket": ticket, "expires_in_s": ttl})


async def stream(request: Request) -> Response | EventStream:
    user = require_ticket(request)
    _query(request, ("ticket",))
    broadcaster: Broadcaster = request.app.state.broadcaster
    sub = broadcaster.subscribe(user)
    if sub is None:
        raise ApiError(503, "too_many_clients", f"{broadcaster.max_clients} stream clients "
                                                "are connected; try again later")
    return EventStream(broadcaster, sub)


async def stats(request: Request) -> Response:
    require(request, "admin")
    b: Broadcaster = request.app.state.broadcaster
    auth: Authenticator = request.app.state.auth
    guard = getattr(request.app.state, "connection_guard", None)
    return _json({"stream_clients": b.clients, "stream_dropped": b.dropped,
                  "stream_refused": b.refused, "stream_replaced": b.replaced,
                  "stream_published": b.published, "stream_missed": b.missed,
                  "auth_refused": auth.refused, "tickets_refused": auth.tickets_refused,
                  **(guard.stats() if guard is not None else {})})


async def openapi(request: Request) -> Response:
    return _json(request.app.state.openapi)


async def console_index(request: Request) -> Response:
    return Response(request.app.state.console["index.html"], media_type="text/html; "
                                                                         "charset=utf-8",
                    headers={"cache-control": "no-cache"})


async def console_file(request: Request) -> Response:
    name = request.path_params["name"]
    files: dict[str, bytes] = request.app.state.console
    if name not in CONSOLE_FILES or name not in files:
        raise ApiError(404, "not_found", "no such file")
    return Response(files[name], media_type=CONSOLE_FILES[name],
                    headers={"cache-control": "no-cache"})


API_ROUTES: tuple[Route, ...] = (
    Route("/api/v1/alarms", list_alarms, methods=["GET"], name="list_alarms"),
    Route("/api/v1/alarms/{alarm_id}", get_alarm, methods=["GET"], name="get_alarm"),
    Route("/api/v1/alarms/{alarm_id}/ack", acknowledge, methods=["POST"], name="acknowledge"),
    Route("/api/v1/alarms/{alarm_id}/resolve", resolve, methods=["POST"], name="resolve"),
    Route("/api/v1/sites", list_sites, methods=["GET"], name="list_sites"),
    Route("/api/v1/gateways", list_gateways, methods=["GET"], name="list_gateways"),
    Route("/api/v1/audit", audit, methods=["GET"], name="audit"),
    Route("/api/v1/me", me, methods=["GET"], name="me"),
    Route("/api/v1/stats", stats, methods=["GET"], name="stats"),
    Route("/api/v1/stream-ticket", stream_ticket, methods=["POST"], name="stream_ticket"),
    Route("/api/v1/stream", stream, methods=["GET"], name="stream"),
    Route("/api/v1/openapi.json", openapi, methods=["GET"], name="openapi"),
)
CONSOLE_ROUTES: tuple[Route, ...] = (
    Route("/", console_index, methods=["GET"], name="console"),
    Route("/console/{name}", console_file, methods=["GET"], name="console_file"),
)


# -- errors and headers ------------------------------------------------------------------------


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 408: "timeout", 409: "conflict", 413: "too_large", 415:
          "unsupported_media_type", 503: "unavailable"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ApiError):
        return error_response(exc.status_code, exc.code, exc.message, exc.headers)
    code = _CODES.get(exc.status_code, "error")
    message = {404: "no such route", 405: "method not allowed here"}.get(exc.status_code,
                                                                          str(exc.detail))
    return error_response(exc.status_code, code, message, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("API error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error (logged by the collector)")


class SecurityHeaders:
    """Headers on every answer: the console's CSP (no inline script, no framing), no MIME
    sniffing, no referrer; API answers are not cached; HSTS under TLS."""

    def __init__(self, app: ASGIApp, *, tls: bool) -> None:
        self.app = app
        headers = [(b"content-security-policy", CSP.encode()),
                   (b"x-content-type-options", b"nosniff"),
                   (b"x-frame-options", b"DENY"),
                   (b"referrer-policy", b"no-referrer"),
                   (b"cross-origin-opener-policy", b"same-origin")]
        if tls:
            headers.append((b"strict-transport-security", b"max-age=31536000"))
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + self.headers
                if api and not any(k == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _console_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in CONSOLE_DIR.iterdir()
            if p.name in CONSOLE_FILES or p.name == "index.html"}


def create_app(*, book: Book, registry: ReadRegistry, config: HttpConfig,
               broadcaster: Broadcaster | None = None,
               extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The API and console for ``book`` and ``registry`` under ``config``; ``extra_routes``
    (other areas' routes, e.g. ``collector/uitd/routes.py``) use :func:`require` too and are
    listed in the OpenAPI document when they are :class:`Route` objects with a docstring."""
    routes: list[BaseRoute] = [*API_ROUTES, *extra_routes, *CONSOLE_ROUTES]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error,
                                                       Exception: _server_error})
    app.state.book = book
    app.state.registry = registry
    app.state.config = config
    app.state.auth = Authenticator(config.users, ticket_ttl_s=config.ticket_ttl_s,
                                   tickets_per_minute=config.tickets_per_minute)
    app.state.broadcaster = broadcaster or Broadcaster(
        queue_size=config.stream_queue, max_clients=config.max_stream_clients,
        heartbeat_s=config.heartbeat_s, max_per_user=config.max_streams_per_user)
    app.state.openapi = openapi_document(routes)
    app.state.console = _console_files()
    app.add_middleware(SecurityHeaders, tls=config.tls)
    return app
