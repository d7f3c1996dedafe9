"""The API over a real uvicorn and the real AlarmBook: tokens, roles, sites, errors, bounds,
acknowledge and resolve with their audit, hostile text, headers, the OpenAPI document."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.api.app import API_ROUTES
from collector.api.auth import Authenticator, User, require
from tests.infra.tls import TestCA

from .conftest import ADMIN, FIRM, OPERATOR, VIEWER, Api


def error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    doc = r.json()["error"]
    assert doc["status"] == status and doc["code"] == code, doc
    assert isinstance(doc["message"], str) and doc["message"]
    return str(doc["message"])


def test_every_route_needs_a_valid_token(api: Api) -> None:
    alarm = api.raise_alarm()
    routes = [("GET", "/api/v1/alarms"), ("GET", f"/api/v1/alarms/{alarm.id}"),
              ("POST", f"/api/v1/alarms/{alarm.id}/ack"),
              ("POST", f"/api/v1/alarms/{alarm.id}/resolve"), ("GET", "/api/v1/sites"),
              ("GET", "/api/v1/gateways"), ("GET", "/api/v1/audit"), ("GET", "/api/v1/me"),
              ("GET", "/api/v1/stats"), ("POST", "/api/v1/stream-ticket"),
              ("GET", "/api/v1/stream")]
    wrong = [None, OPERATOR[:-1] + "X", OPERATOR + "X", OPERATOR[:31], "x" * 5000]
    for method, path in routes:
        for token in wrong:
            c = api.client(token)
            r = c.request(method, path)
            error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
        for header in (f"Basic {OPERATOR}", "Bearer", OPERATOR):
            r = httpx.request(method, api.url + path, headers={"Authorization": header})
            error(r, 401, "unauthorized")
    # Nothing happened to the alarm on the way.
    got = api.book.get(alarm.id)
    assert got is not None and not got.acknowledged and got.resolution is None
    assert api.book.audit() == []
    # Every refusal counted (shown to admins).
    stats = api.client(ADMIN).get("/api/v1/stats").json()
    assert stats["auth_refused"] == len(routes) * (len(wrong) + 3)


def test_the_token_in_a_query_string_is_not_accepted(api: Api) -> None:
    r = httpx.get(f"{api.url}/api/v1/alarms", params={"token": OPERATOR})
    error(r, 401, "unauthorized")
    r = httpx.get(f"{api.url}/api/v1/me", params={"access_token": OPERATOR})
    error(r, 401, "unauthorized")


def test_constant_time_lookup_finds_each_user() -> None:
    from collector.api.config import UserConfig
    auth = Authenticator([UserConfig(f"u{i}", f"{i:02d}" + "t" * 40, "viewer")
                          for i in range(20)])
    for i in range(20):
        user = auth.user_for(f"{i:02d}" + "t" * 40)
        assert user is not None and user.name == f"u{i}"
    assert auth.user_for("99" + "t" * 40) is None
    assert auth.user_for("") is None


def test_roles(api: Api) -> None:
    alarm = api.raise_alarm()
    viewer = api.client(VIEWER)
    assert viewer.get("/api/v1/alarms").status_code == 200
    assert viewer.get(f"/api/v1/alarms/{alarm.id}").status_code == 200
    msg = error(viewer.post(f"/api/v1/alarms/{alarm.id}/ack", json={}), 403, "forbidden")
    assert "operator" in msg
    error(viewer.post(f"/api/v1/alarms/{alarm.id}/resolve", json={"verdict": "test"}), 403,
          "forbidden")
    error(viewer.get("/api/v1/audit"), 403, "forbidden")
    error(api.client(OPERATOR).get("/api/v1/audit"), 403, "forbidden")
    error(api.client(OPERATOR).get("/api/v1/stats"), 403, "forbidden")
    got = api.book.get(alarm.id)
    assert got is not None and not got.acknowledged
    assert api.client(ADMIN).get("/api/v1/audit").json() == {"audit": [], "next": None}
    assert api.client(VIEWER).get("/api/v1/me").json() == {
        "name": "watcher", "role": "viewer", "sites": ["*"]}


def test_acknowledge_and_resolve_are_audited(api: Api) -> None:
    alarm = api.raise_alarm()
    op = api.client(OPERATOR)
    r = op.post(f"/api/v1/alarms/{alarm.id}/ack", json={"note": "到场核实中"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == alarm.id and doc["acknowledged"] is True
    assert doc["acknowledged_by"] == "duty-officer" and doc["note"] == "到场核实中"
    # Twice: a conflict that says by whom.
    assert "duty-officer" in error(op.post(f"/api/v1/alarms/{alarm.id}/ack"), 409, "conflict")
    r = op.post(f"/api/v1/alarms/{alarm.id}/resolve", json={"verdict": "false",
                                                            "note": "cooking smoke"})
    assert r.status_code == 200, r.text
    assert r.json()["resolution"] == "false" and r.json()["resolved_by"] == "duty-officer"
    error(op.post(f"/api/v1/alarms/{alarm.id}/resolve", json={"verdict": "real"}), 409,
          "conflict")
    detail = op.get(f"/api/v1/alarms/{alarm.id}").json()
    whats = [t["what"] for t in detail["timeline"]]
    assert whats[0] == "raised" and "acknowledged" in whats and whats[-1] == "resolved"
    assert detail["note"] == "到场核实中"
    audit = api.client(ADMIN).get("/api/v1/audit").json()["audit"]
    assert [(a["user"], a["action"], a["alarm_id"], a["origin"]) for a in audit] == [
        ("duty-officer", "resolve", alarm.id, "127.0.0.1"),
        ("duty-officer", "acknowledge", alarm.id, "127.0.0.1")]
    assert "cooking smoke" in audit[0]["detail"] and audit[1]["detail"] == "到场核实中"
    assert all(a["at_ms"] > 0 for a in audit)
    # Paging: one entry a page, each page's "next" the cursor of the following one (the two
    # entries may share a millisecond: the cursor holds the log's seq too).
    admin = api.client(ADMIN)
    first = admin.get("/api/v1/audit", params={"limit": 1}).json()
    assert first["audit"] == audit[:1]
    assert first["next"] == {"before_ms": audit[0]["at_ms"], "before_seq": audit[0]["seq"]}
    second = admin.get("/api/v1/audit", params={"limit": 1, **first["next"]}).json()
    assert second["audit"] == audit[1:]
    third = admin.get("/api/v1/audit", params={"limit": 1, **second["next"]}).json()
    assert third == {"audit": [], "next": None}
    error(admin.get("/api/v1/audit", params={"before_seq": 5}), 400, "bad_request")


def test_resolve_acknowledges_too_and_needs_a_verdict(api: Api) -> None:
    alarm = api.raise_alarm()
    op = api.client(OPERATOR)
    error(op.post(f"/api/v1/alarms/{alarm.id}/resolve", json={}), 400, "bad_request")
    error(op.post(f"/api/v1/alarms/{alarm.id}/resolve", json={"verdict": "maybe"}), 400,
          "bad_request")
    r = op.post(f"/api/v1/alarms/{alarm.id}/resolve", json={"verdict": "test"})
    assert r.status_code == 200
    assert r.json()["acknowledged"] is True and r.json()["acknowledged_by"] == "duty-officer"


def test_unknown_ids_and_routes(api: Api) -> None:
    op = api.client(OPERATOR)
    error(op.get("/api/v1/alarms/a0000000000000000"), 404, "not_found")
    error(op.post("/api/v1/alarms/a0000000000000000/ack"), 404, "not_found")
    error(op.post("/api/v1/alarms/a0000000000000000/resolve", json={"verdict": "real"}), 404,
          "not_found")
    error(op.get("/api/v1/alarms/" + "x" * 300), 404, "not_found")
    error(op.get("/api/v1/nothing"), 404, "not_found")
    error(op.delete("/api/v1/alarms"), 405, "method_not_allowed")


def test_sites_scope_what_a_user_sees_and_does(api: Api) -> None:
    mine = api.raise_alarm(site="hz-0001", source="s-1")
    theirs = api.raise_alarm(site="sh-0009", source="s-2", gateway="gw-9")
    firm = api.client(FIRM)
    ids = [a["id"] for a in firm.get("/api/v1/alarms").json()["alarms"]]
    assert ids == [mine.id]
    everyone = {a["id"] for a in api.client(VIEWER).get("/api/v1/alarms").json()["alarms"]}
    assert everyone == {mine.id, theirs.id}
    error(firm.get(f"/api/v1/alarms/{theirs.id}"), 403, "forbidden")
    error(firm.post(f"/api/v1/alarms/{theirs.id}/ack", json={}), 403, "forbidden")
    error(firm.post(f"/api/v1/alarms/{theirs.id}/resolve", json={"verdict": "real"}), 403,
          "forbidden")
    error(firm.get("/api/v1/alarms", params={"site": "sh-0009"}), 403, "forbidden")
    got = api.book.get(theirs.id)
    assert got is not None and not got.acknowledged
    assert [s["id"] for s in firm.get("/api/v1/sites").json()["sites"]] == ["hz-0001"]
    assert firm.post(f"/api/v1/alarms/{mine.id}/ack").json()["acknowledged_by"] == "hz-firm"


def test_list_filters_and_bounds(api: Api) -> None:
    a1 = api.raise_alarm(source="s-1", seq=1)
    a2 = api.raise_alarm(source="s-2", seq=2, type="fault")
    a3 = api.raise_alarm(site="hz-0002", source="s-3", seq=3)
    op = api.client(OPERATOR)
    op.post(f"/api/v1/alarms/{a2.id}/ack")

    def ids(**params: object) -> set[str]:
        r = op.get("/api/v1/alarms", params=params)
        assert r.status_code == 200, r.text
        return {a["id"] for a in r.json()["alarms"]}

    assert ids() == {a1.id, a2.id, a3.id}
    assert ids(acknowledged="true") == {a2.id}
    assert ids(acknowledged="false") == {a1.id, a3.id}
    assert ids(site="hz-0002") == {a3.id}
    assert ids(state="cleared") == set()
    assert ids(state="all") == {a1.id, a2.id, a3.id}
    assert len(ids(limit=2)) == 2
    for bad in ({"state": "burning"}, {"limit": 0}, {"limit": -1}, {"limit": "ten"},
                {"limit": 10**30}, {"acknowledged": "yes"}, {"colour": "red"}):
        error(op.get("/api/v1/alarms", params=bad), 400, "bad_request")
    error(op.get("/api/v1/alarms?limit=1&limit=2"), 400, "bad_request")
    big = api.server.config.max_limit
    assert big == 1000
    assert op.get("/api/v1/alarms", params={"limit": big}).status_code == 200
    error(op.get("/api/v1/alarms", params={"limit": big + 1}), 400, "bad_request")
    cursors: list[dict[str, str | int]] = [
        {"before_id": a1.id}, {"before_ms": 1, "before_id": "a/../b"}, {"before_ms": "soon"},
        {"before_ms": -1}]
    for cursor in cursors:
        error(op.get("/api/v1/alarms", params=cursor), 400, "bad_request")


def test_a_long_list_is_read_page_by_page(api: Api) -> None:
    """``next`` leads through every alarm once, newest first, for a user of some sites as
    for one of all; the last page says there is no other."""
    made = [api.raise_alarm(site=f"{'hz' if i % 3 else 'sh'}-{i % 5:04d}", source=f"s-{i}",
                            seq=i + 1) for i in range(40)]  # many share a raise time
    for token, sees in ((OPERATOR, lambda s: True), (FIRM, lambda s: s.startswith("hz-"))):
        client = api.client(token)
        want = [a.id for a in sorted(made, key=lambda a: (-a.raised_ms, a.id))
                if sees(a.site)]
        got: list[str] = []
        params: dict[str, str | int] = {"state": "active", "limit": 6}
        for _ in range(100):
            doc = client.get("/api/v1/alarms", params=params).json()
            got += [a["id"] for a in doc["alarms"]]
            if doc["next"] is None:
                break
            assert len(doc["alarms"]) == 6
            params = {**params, **doc["next"]}
        assert got == want and len(want) >= 20
        # before_ms alone: the alarms raised before that time.
        newest = max(a.raised_ms for a in made)
        older = client.get("/api/v1/alarms", params={"before_ms": newest}).json()["alarms"]
        assert {a["id"] for a in older} == \
            {a.id for a in made if a.raised_ms < newest and sees(a.site)}


def test_bodies_and_notes_are_bounded(api: Api) -> None:
    alarm = api.raise_alarm()
    op = api.client(OPERATOR)
    url = f"/api/v1/alarms/{alarm.id}/ack"
    limit = api.server.config.max_body_bytes
    error(op.post(url, content=b"{" + b" " * limit + b"}",
                  headers={"content-type": "application/json"}), 413, "too_large")

    def chunks() -> object:  # no Content-Length: the limit still holds
        for _ in range(limit // 1000 + 2):
            yield b" " * 1000

    error(op.post(url, content=chunks(), headers={"content-type": "application/json"}), 413,
          "too_large")
    note = api.server.config.max_note_chars
    error(op.post(url, json={"note": "x" * (note + 1)}), 400, "bad_request")
    error(op.post(url, json={"note": 42}), 400, "bad_request")
    error(op.post(url, json={"note": "a\x00b"}), 400, "bad_request")
    error(op.post(url, json={"note": "ok", "by": "someone-else"}), 400, "bad_request")
    error(op.post(url, json=["note"]), 400, "bad_request")
    error(op.post(url, content=b"{not json", headers={"content-type": "application/json"}),
          400, "bad_json")
    error(op.post(url, content=b'{"note": "x"}', headers={"content-type": "text/plain"}), 415,
          "unsupported_media_type")
    got = api.book.get(alarm.id)
    assert got is not None and not got.acknowledged  # nothing done by a refused request
    r = op.post(url, json={"note": "y" * note})
    assert r.status_code == 200 and r.json()["note"] == "y" * note


def test_hostile_text_comes_back_exactly_as_json(api: Api) -> None:
    hostile = '<script>alert(1)</script>"\'\n\x1b[31m</td><img src=x onerror=alert(2)>'
    alarm = api.raise_alarm(description=hostile)
    op = api.client(OPERATOR)
    r = op.get(f"/api/v1/alarms/{alarm.id}")
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["description"] == hostile
    assert r.headers["x-content-type-options"] == "nosniff"  # never sniffed as HTML


def test_security_headers(api: Api) -> None:
    for path in ("/", "/console/app.js", "/api/v1/openapi.json"):
        r = httpx.get(api.url + path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert "server" not in r.headers
    r = api.client(OPERATOR).get("/api/v1/alarms")
    assert r.headers["cache-control"] == "no-store"
    error(httpx.get(api.url + "/console/../config.py"), 404, "not_found")
    error(httpx.get(api.url + "/console/index.py"), 404, "not_found")


def test_console_has_no_inline_script_nor_innerhtml(api: Api) -> None:
    html = httpx.get(api.url + "/").text
    assert "<script>" not in html.replace(" ", "") and "onclick" not in html
    js = httpx.get(api.url + "/console/app.js").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink


def test_openapi_lists_every_route(api_factory: Callable[..., Api]) -> None:
    async def devices(request: Request) -> Response:
        """UITD devices (another area's route).

        Uses the API's tokens."""
        require(request, "viewer")
        return JSONResponse({"devices": []})

    made = api_factory(extra_routes=[Route("/api/v1/uitd/{device}", devices, name="uitd")])
    r = made.client(VIEWER).get("/api/v1/uitd/d1")
    assert r.status_code == 200 and r.json() == {"devices": []}
    error(made.client(None).get("/api/v1/uitd/d1"), 401, "unauthorized")
    assert "uitd" not in {r.name for r in API_ROUTES}
    doc = httpx.get(made.url + "/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    json.dumps(doc)
    for route in API_ROUTES:
        assert route.path in doc["paths"], route.path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in doc["paths"][route.path], (route.path, method)
    assert doc["paths"]["/api/v1/uitd/{device}"]["get"]["summary"].startswith("UITD devices")
    served = {r.path for r in made.server.app.routes
              if isinstance(r, Route) and r.path.startswith("/api/")}
    assert served == set(doc["paths"])
    for ref in json.dumps(doc).split('"$ref": "#/components/')[1:]:
        kind, name = ref.split('"')[0].split("/")
        assert name in doc["components"][kind], ref


def test_tickets(api: Api) -> None:
    op = api.client(OPERATOR)
    doc = op.post("/api/v1/stream-ticket").json()
    assert doc["expires_in_s"] == api.server.config.ticket_ttl_s
    auth: Authenticator = api.server.app.state.auth
    assert auth.user_for_ticket(doc["ticket"], now=10**12) is None  # expired
    user = auth.user_for_ticket(doc["ticket"])
    assert user == User("duty-officer", "operator", ("*",))
    assert auth.user_for_ticket(doc["ticket"]) is None  # used once already
    body, mac = doc["ticket"].split(".")
    assert auth.user_for_ticket(body[:-2] + "AA." + mac) is None  # changed
    assert auth.user_for_ticket(doc["ticket"] + "x") is None
    assert auth.user_for_ticket("garbage") is None
    # A ticket opens the stream only.
    r = httpx.get(f"{api.url}/api/v1/alarms", params={"ticket": doc["ticket"]})
    error(r, 401, "unauthorized")
    error(httpx.get(f"{api.url}/api/v1/stream", params={"ticket": "x.y"}), 401, "unauthorized")


def test_alarm_json_is_to_json(api: Api) -> None:
    from collector.api.jsonview import alarm_json

    alarm = api.raise_alarm()
    assert alarm_json(alarm) == alarm.to_json()
    done = api.book.resolve(alarm.id, verdict="test", by="x", note="n", origin="cli")
    assert alarm_json(done) == done.to_json()


def test_tls(api_factory: Callable[..., Api], tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    cert = ca.issue("api", server=True)
    api = api_factory(cert_file=cert.cert, key_file=cert.key)
    assert api.url.startswith("https://")
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca.cert))) as c:
        r = c.get(api.url + "/api/v1/me", headers={"Authorization": f"Bearer {OPERATOR}"})
        assert r.status_code == 200 and r.json()["name"] == "duty-officer"
        assert r.headers["strict-transport-security"].startswith("max-age=")
    with pytest.raises(httpx.ConnectError):  # an unknown CA: the client refuses
        httpx.get(api.url + "/api/v1/openapi.json")
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port: nothing served
        httpx.get(api.url.replace("https://", "http://") + "/api/v1/openapi.json")
