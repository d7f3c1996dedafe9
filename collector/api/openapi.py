"""The OpenAPI 3.1 document of ``/api/v1``, built in code and served at
``/api/v1/openapi.json`` (Starlette writes none by itself).

The document for this module's routes is written out here; a route another area adds
(``extra_routes``) gets a minimal entry from its docstring, so nothing served is missing
from the document (a test walks the app's routes and checks each one is here).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Route

__all__ = ["openapi_document"]

VERSION = "1.0.0"

_ERROR = {"$ref": "#/components/responses/Error"}
_ERRORS_READ = {"401": _ERROR, "403": _ERROR}
_ERRORS_ACT = {"400": _ERROR, "401": _ERROR, "403": _ERROR, "404": _ERROR, "409": _ERROR,
               "408": _ERROR, "413": _ERROR, "415": _ERROR}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str, where: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema,
            "description": description}


_ALARM_ID = _param("alarm_id", "path", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                   "the alarm's id", required=True)
_NULL_STR = {"type": ["string", "null"]}
_NULL_INT = {"type": ["integer", "null"]}

SCHEMAS: dict[str, Any] = {
    "Alarm": {
        "type": "object",
        "description": "One alarm. Text fields (description, note, source) are raw text from "
                       "devices and people: escape them when you render them.",
        "properties": {
            "id": {"type": "string"}, "gateway": {"type": "string"},
            "site": {"type": "string"}, "source": {"type": "string"},
            "description": {"type": "string"},
            "type": {"type": "string", "examples": ["fire_alarm", "gateway_offline"]},
            "priority": {"type": "string", "enum": ["fire", "alarm", "event"]},
            "state": {"type": "string", "enum": ["active", "cleared"]},
            "open": {"type": "boolean",
                     "description": "until acknowledged and (cleared or resolved)"},
            "raised_ms": {"type": "integer"}, "panel_ms": _NULL_INT, "gateway_ms": _NULL_INT,
            "cleared_ms": _NULL_INT, "raise_count": {"type": "integer"},
            "acknowledged": {"type": "boolean"}, "acknowledged_by": _NULL_STR,
            "acknowledged_ms": _NULL_INT, "note": _NULL_STR,
            "resolution": {"type": ["string", "null"], "enum": ["real", "false", "test", None]},
            "resolved_by": _NULL_STR, "resolved_ms": _NULL_INT, "resolution_note": _NULL_STR,
            "escalation_policy": _NULL_STR,
            "escalation_step": {"type": "integer", "description": "-1: no step notified yet"},
            "next_step_ms": _NULL_INT,
        },
        "required": ["id", "gateway", "site", "source", "description", "type", "priority",
                     "state", "raised_ms", "cleared_ms", "acknowledged", "acknowledged_by",
                     "acknowledged_ms", "note", "resolution", "escalation_step"],
    },
    "TimelineEntry": {
        "type": "object",
        "properties": {"at_ms": {"type": "integer"},
                       "what": {"type": "string", "enum": [
                           "raised", "re-raised", "notified", "acknowledged", "cleared",
                           "resolved", "escalation_stopped"]},
                       "by": _NULL_STR, "detail": _NULL_STR},
        "required": ["at_ms", "what"],
    },
    "AlarmDetail": {"allOf": [_ref("Alarm"), {
        "type": "object", "properties": {"timeline": {"type": "array",
                                                      "items": _ref("TimelineEntry")}},
        "required": ["timeline"]}]},
    "Site": {
        "type": "object",
        "properties": {"id": {"type": "string"},
                       "colour": {"type": ["string", "null"],
                                  "enum": ["green", "yellow", "red", None]},
                       "reasons": {"type": "array", "items": {"type": "string"}},
                       "since_ms": _NULL_INT, "updated_ms": _NULL_INT,
                       "open_alarms": {"type": "integer"},
                       "gateways_online": {"type": "integer"},
                       "gateways_offline": {"type": "integer"}},
    },
    "Gateway": {
        "type": "object",
        "properties": {"id": {"type": "string"}, "site": _NULL_STR,
                       "state": {"type": "string", "enum": ["online", "offline", "unknown"]},
                       "reason": _NULL_STR, "since_ms": _NULL_INT, "last_seen_ms": _NULL_INT,
                       "last_health_ms": _NULL_INT, "version": _NULL_STR,
                       "outbox_depth": _NULL_INT, "outbox_oldest_s": {"type": ["number", "null"]},
                       "last_seq": _NULL_INT, "evicted": _NULL_INT,
                       "links_down": {"type": "array", "items": {"type": "string"}}},
    },
    "AuditEntry": {
        "type": "object",
        "properties": {"at_ms": {"type": "integer"}, "user": {"type": "string"},
                       "action": {"type": "string", "enum": ["acknowledge", "resolve"]},
                       "alarm_id": {"type": "string"},
                       "origin": {"type": "string", "description": "the client's address"},
                       "detail": _NULL_STR,
                       "seq": {"type": "integer", "description": "place in the log (paging)"}},
    },
    "User": {"type": "object", "properties": {
        "name": {"type": "string"}, "role": {"type": "string",
                                             "enum": ["viewer", "operator", "admin"]},
        "sites": {"type": "array", "items": {"type": "string"}}}},
    "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "status": {"type": "integer"}, "code": {"type": "string"},
        "message": {"type": "string"}}}}},
}

PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/alarms": {"get": {
        "summary": "Alarms, newest first", "operationId": "listAlarms",
        "parameters": [
            _param("state", "query", {"type": "string", "enum": [
                "active", "cleared", "open", "closed", "all"], "default": "active"},
                   "active / cleared: the condition's state; open: still raised or not yet "
                   "acknowledged; closed; all (docs/alarms.md)"),
            _param("site", "query", {"type": "string"}, "one site (403 outside your sites)"),
            _param("acknowledged", "query", {"type": "string", "enum": ["true", "false"]},
                   "only acknowledged / unacknowledged ones"),
            _param("limit", "query", {"type": "integer", "minimum": 1, "default": 500},
                   "at most this many (the server's max_limit caps it: 1000 by default, "
                   "2000 at most)"),
            _param("before_ms", "query", {"type": "integer", "minimum": 0},
                   "the next page: next.before_ms of the previous answer (alone: alarms "
                   "raised before it)"),
            _param("before_id", "query", {"type": "string"},
                   "the next page: next.before_id of the previous answer (with before_ms)")],
        "responses": {"200": _ok({"type": "object", "properties": {
            "alarms": {"type": "array", "items": _ref("Alarm")},
            "next": {"type": ["object", "null"], "description": "the cursor of the next "
                     "page (null: this was the last)", "properties": {
                         "before_ms": {"type": "integer"},
                         "before_id": {"type": "string"}}}}}), "400": _ERROR,
            **_ERRORS_READ}}},
    "/api/v1/alarms/{alarm_id}": {"get": {
        "summary": "One alarm with its timeline", "operationId": "getAlarm",
        "parameters": [_ALARM_ID],
        "responses": {"200": _ok(_ref("AlarmDetail")), "404": _ERROR, **_ERRORS_READ}}},
    "/api/v1/alarms/{alarm_id}/ack": {"post": {
        "summary": "Acknowledge (operator); audited", "operationId": "acknowledgeAlarm",
        "parameters": [_ALARM_ID],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"note": {"type": "string", "maxLength": 1000}}}}}},
        "responses": {"200": _ok(_ref("Alarm")), **_ERRORS_ACT}}},
    "/api/v1/alarms/{alarm_id}/resolve": {"post": {
        "summary": "Resolve with a verdict (operator); audited", "operationId": "resolveAlarm",
        "parameters": [_ALARM_ID],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "required": ["verdict"],
            "properties": {"verdict": {"type": "string", "enum": ["real", "false", "test"]},
                           "note": {"type": "string", "maxLength": 1000}}}}}},
        "responses": {"200": _ok(_ref("Alarm")), **_ERRORS_ACT}}},
    "/api/v1/sites": {"get": {
        "summary": "Sites: colour, open alarms, gateways online and offline",
        "operationId": "listSites",
        "responses": {"200": _ok({"type": "object", "properties": {
            "sites": {"type": "array", "items": _ref("Site")}}}), **_ERRORS_READ}}},
    "/api/v1/gateways": {"get": {
        "summary": "Gateways of your sites", "operationId": "listGateways",
        "responses": {"200": _ok({"type": "object", "properties": {
            "gateways": {"type": "array", "items": _ref("Gateway")}}}), **_ERRORS_READ}}},
    "/api/v1/audit": {"get": {
        "summary": "Who acknowledged and resolved what, when, from where (admin)",
        "operationId": "listAudit",
        "parameters": [_param("limit", "query", {"type": "integer", "minimum": 1}, "at most"),
                       _param("before_ms", "query", {"type": "integer"},
                              "older than this, or with before_seq the page after the entry "
                              "(at_ms, seq) (paging: the response's next)"),
                       _param("before_seq", "query", {"type": "integer"},
                              "the previous page's last seq, with before_ms")],
        "responses": {"200": _ok({"type": "object", "properties": {
            "audit": {"type": "array", "items": _ref("AuditEntry")},
            "next": {"type": ["object", "null"], "properties": {
                "before_ms": {"type": "integer"}, "before_seq": {"type": "integer"}}}}}),
            **_ERRORS_READ}}},
    "/api/v1/me": {"get": {
        "summary": "Who the token belongs to", "operationId": "me",
        "responses": {"200": _ok(_ref("User")), "401": _ERROR}}},
    "/api/v1/stats": {"get": {
        "summary": "Stream clients (dropped, refused, replaced), refused tokens and tickets, "
                   "connections refused per address and closed idle (admin)",
        "operationId": "stats",
        "responses": {"200": _ok({"type": "object", "additionalProperties":
                                  {"type": "integer"}}), **_ERRORS_READ}}},
    "/api/v1/stream-ticket": {"post": {
        "summary": "A short-lived ticket to open the stream (EventSource sends no headers)",
        "operationId": "streamTicket",
        "responses": {"200": _ok({"type": "object", "properties": {
            "ticket": {"type": "string"}, "expires_in_s": {"type": "number"}}}),
            "401": _ERROR, "429": _ERROR}}},
    "/api/v1/stream": {"get": {
        "summary": "Server-Sent Events: alarm and site changes of your sites",
        "description": "Events `hello`, `alarm` ({what, alarm}), `site` ({site, colour, "
                       "reasons, at_ms}), `dropped` (the client fell too far behind), "
                       "`replaced` (a newer stream of the same user took its place: do not "
                       "reconnect); "
                       "`: heartbeat` comments. Authenticate with the bearer header or "
                       "`?ticket=` from POST /api/v1/stream-ticket.",
        "operationId": "stream",
        "parameters": [_param("ticket", "query", {"type": "string"},
                              "a stream ticket (instead of the Authorization header)")],
        "responses": {"200": {"description": "an event stream",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      "401": _ERROR, "503": _ERROR}}},
    "/api/v1/openapi.json": {"get": {
        "summary": "This document", "operationId": "openapi", "security": [],
        "responses": {"200": _ok({"type": "object"})}}},
}


def openapi_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The document for the app's ``routes`` (``/api/`` ones; the console's are not API)."""
    paths: dict[str, dict[str, Any]] = {p: dict(ops) for p, ops in PATHS.items()}
    for route in routes:
        if not isinstance(route, Route) or not route.path.startswith("/api/"):
            continue
        if route.path in PATHS:
            continue
        doc = inspect.getdoc(route.endpoint) or route.name
        summary, _, rest = doc.partition("\n")
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            op: dict[str, Any] = {"summary": summary, "operationId": route.name,
                                  "responses": {"200": {"description": "OK"},
                                                **_ERRORS_READ}}
            if rest.strip():
                op["description"] = rest.strip()
            params = [_param(n, "path", {"type": "string"}, n, required=True)
                      for n in route.param_convertors]
            if params:
                op["parameters"] = params
            paths.setdefault(route.path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "firegate collector API", "version": VERSION,
                 "description": "Alarms, sites and gateways of the firegate collector, with "
                                "the audit log and a live stream (docs/api.md)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a user's token from [[user]]"}},
            "schemas": SCHEMAS,
            "responses": {"Error": {"description": "an error",
                                    "content": {"application/json": {"schema":
                                                                     _ref("Error")}}}},
        },
    }
