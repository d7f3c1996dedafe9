"""HTTP routes of the GB/T 26875.3 centre, added to the collector's API (collector/api/).

* ``GET /api/v1/uitds`` (viewer): the UITDs of the caller's sites, and the centre's counters
  (only to a user of every site: they count other sites' UITDs too);
* ``POST /api/v1/uitds/{uitd}/clock-sync`` (operator): time sync (type 90, 图44);
* ``POST /api/v1/uitds/{uitd}/check-post`` (operator): 查岗 (type 91, 图46), body
  ``{"minutes": 10}``;
* ``POST /api/v1/uitds/{uitd}/read`` (operator): read states, body ``{"what": "uitd"}``, or
  ``{"what": "systems", "targets": [[1, 1]]}``, or ``"components"`` with
  ``[[system type, system address, component address]]``.

``{uitd}`` is the gateway id or the address (``0x`` + 12 hex digits). Every route starts with
:func:`collector.api.auth.require`; a UITD outside the caller's sites is answered 404, as if
it did not exist (its existence is not leaked). Each command is logged with the caller's name
and kept in the UITD's command log (``by``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from collector.api.auth import ApiError, User, require
from collector.uitd.centre import Centre, CentreError
from collector.uitd.commands import READS, check_post, clock_sync, read, run_command

__all__ = ["MAX_BODY", "uitd_routes"]

MAX_BODY = 4096
"""Bytes of a command's JSON body (a read of 102 systems fits easily)."""


async def _body(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise ApiError(413, "too_large", f"the body must be at most {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field {str(unknown[0])[:40]!r}; allowed: "
                                           f"{', '.join(allowed) or 'none'}")
    return data


def uitd_routes(centre: Centre) -> list[BaseRoute]:
    """The centre's routes, for ``create_app(extra_routes=...)``."""

    def visible(user: User, name: str) -> str:
        """The UITD's gateway id, if the caller may see it (404 otherwise)."""
        try:
            device = centre.device(name)
            site = device.entry.site
            gateway = device.gateway
        except CentreError:
            entry = next((u for u in centre.config.uitds if u.gateway == name), None)
            if entry is None:
                raise ApiError(404, "not_found", f"no UITD {name[:64]!r}") from None
            site, gateway = entry.site, entry.gateway
        if not user.sees(site):
            raise ApiError(404, "not_found", f"no UITD {name[:64]!r}")
        return gateway

    async def command(request: Request, run: Any) -> Response:
        try:
            out = await run_command(centre, run)
        except CentreError as exc:
            code = {400: "bad_request", 404: "not_found", 504: "no_answer",
                    503: "unavailable"}.get(exc.status, "conflict")
            raise ApiError(exc.status, code, str(exc)) from None
        return JSONResponse(out)

    async def list_uitds(request: Request) -> Response:
        user = require(request)
        data = await run_command(centre, _status(centre))
        data["uitds"] = [u for u in data["uitds"] if user.sees(str(u["site"]))]
        if not user.all_sites:  # the centre's totals tell of other sites' UITDs and peers
            data["counters"] = {}
            data["connections"] = sum(1 for u in data["uitds"] if u["connected"])
        return JSONResponse(data)

    async def do_clock_sync(request: Request) -> Response:
        user = require(request, "operator")
        await _body(request, ())
        gw = visible(user, request.path_params["uitd"])
        return await command(request, lambda: clock_sync(centre, gw, by=user.name))

    async def do_check_post(request: Request) -> Response:
        user = require(request, "operator")
        body = await _body(request, ("minutes",))
        minutes = body.get("minutes", 10)
        if isinstance(minutes, bool) or not isinstance(minutes, int):
            raise ApiError(400, "bad_request", "minutes must be an integer from 1 to 255")
        gw = visible(user, request.path_params["uitd"])
        return await command(request, lambda: check_post(centre, gw, minutes, by=user.name))

    async def do_read(request: Request) -> Response:
        user = require(request, "operator")
        body = await _body(request, ("what", "targets"))
        what = body.get("what", "uitd")
        if what not in READS:
            raise ApiError(400, "bad_request", f"what must be one of {', '.join(READS)}")
        targets = body.get("targets", [])
        if not isinstance(targets, list) or not all(
                isinstance(t, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in t) for t in targets):
            raise ApiError(400, "bad_request", "targets must be a list of lists of integers")
        gw = visible(user, request.path_params["uitd"])
        return await command(request, lambda: read(
            centre, gw, what, [tuple(t) for t in targets], by=user.name))

    return [
        Route("/api/v1/uitds", list_uitds, methods=["GET"]),
        Route("/api/v1/uitds/{uitd}/clock-sync", do_clock_sync, methods=["POST"]),
        Route("/api/v1/uitds/{uitd}/check-post", do_check_post, methods=["POST"]),
        Route("/api/v1/uitds/{uitd}/read", do_read, methods=["POST"]),
    ]


def _status(centre: Centre) -> Any:
    async def status() -> dict[str, Any]:
        return centre.status()  # on the centre's loop: no link changes under it
    return status
