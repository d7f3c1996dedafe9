"""The centre's commands through the real HTTP API and the real command line: a collector with
``[http]`` and ``[gb26875]`` on free loopback ports, a UITD on real TCP answering them, and
``firegate collector uitd ...`` calling the API with a token file."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from firegate.cli.main import app
from protocols.gb26875 import ClockSync, Command, decode_adu
from tests.collector.conftest import wait_until
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port

from .fake_uitd import FakeUitd
from .helpers import ADDRESS, GATEWAY, SITE, centre

OPERATOR = "op-token-0123456789abcdef0123456789"
VIEWER = "viewer-token-0123456789abcdef012345"
OUTSIDER = "outsider-token-0123456789abcdef0123"


def _sections() -> dict[str, Any]:
    return {"http": {"listen": f"127.0.0.1:{free_port()}"},
            "user": [{"name": "ops", "token": OPERATOR, "role": "operator"},
                     {"name": "eve", "token": VIEWER, "role": "viewer"},
                     {"name": "far", "token": OUTSIDER, "role": "operator",
                      "sites": ["elsewhere-*"]}]}


def _confirm_controls(uitd: FakeUitd, seen: list[Any], stop: threading.Event) -> None:
    while not stop.is_set():
        frame = uitd.next_frame(timeout=0.2)
        if frame is None:
            if uitd.eof:
                return
            continue
        if frame.command == Command.CONTROL:
            seen.append(decode_adu(frame.adu))
            uitd.send_raw(uitd.session.confirm(frame))


def _http(url: str, token: str, method: str = "GET", body: bytes | None = None
          ) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_and_cli_reach_the_uitd(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with centre(tmp_path, mosquitto, sections=_sections()) as (c, ctr, _):
        assert c.api is not None
        base = c.api.url
        token_file = tmp_path / "token"
        token_file.write_text(OPERATOR + "\n")
        token_file.chmod(0o600)
        uitd = FakeUitd(ctr.port or 0, ADDRESS)
        uitd.keepalive()
        assert uitd.next_frame() is not None
        seen: list[Any] = []
        stop = threading.Event()
        t = threading.Thread(target=_confirm_controls, args=(uitd, seen, stop), daemon=True)
        t.start()
        try:
            runner = CliRunner()
            result = runner.invoke(app, ["collector", "uitd", "clock-sync", GATEWAY,
                                         "--url", base, "--token-file", str(token_file),
                                         "--json"])
            assert result.exit_code == 0, result.output
            assert json.loads(result.output)["confirmed"] is True
            assert isinstance(seen[0].objects[0], ClockSync)
            result = runner.invoke(app, ["collector", "uitd", "check-post",
                                         f"0x{ADDRESS:012x}", "--minutes", "3", "--url", base,
                                         "--token-file", str(token_file)])
            assert result.exit_code == 0, result.output
            assert seen[1].objects[0].timeout_minutes == 3
            # list through the API, and from the state directory
            result = runner.invoke(app, ["collector", "uitd", "list", "--url", base,
                                         "--token-file", str(token_file), "--json"])
            assert result.exit_code == 0, result.output
            row = json.loads(result.output)["uitds"][0]
            assert row["gateway"] == GATEWAY and row["connected"] is True
            assert [cmd["by"] for cmd in row["commands"]] == ["ops", "ops"]
            assert c.config.source is not None
            wait_until((c.config.state_dir / "uitd.json").exists, "uitd.json")
            result = runner.invoke(app, ["collector", "uitd", "list", "--config",
                                         str(c.config.source)])
            assert result.exit_code == 0, result.output
            assert GATEWAY in result.output and SITE in result.output
            # roles and sites
            status, doc = _http(f"{base}/api/v1/uitds/{GATEWAY}/clock-sync", VIEWER, "POST")
            assert status == 403, doc
            status, doc = _http(f"{base}/api/v1/uitds/{GATEWAY}/clock-sync", OUTSIDER, "POST")
            assert status == 404, doc  # outside its sites: as if it did not exist
            status, doc = _http(f"{base}/api/v1/uitds", OUTSIDER)
            assert status == 200 and doc["uitds"] == []
            status, doc = _http(f"{base}/api/v1/uitds/{GATEWAY}/check-post", OPERATOR, "POST",
                                b'{"minutes": 900}')
            assert status == 400, doc
            status, doc = _http(f"{base}/api/v1/uitds/{GATEWAY}/read", OPERATOR, "POST",
                                b'{"what": "systems", "targets": [[1]]}')
            assert status == 400, doc
            status, doc = _http(f"{base}/api/v1/uitds/nope/clock-sync", OPERATOR, "POST")
            assert status == 404, doc
            status, doc = _http(f"{base}/api/v1/uitds/{GATEWAY}/clock-sync", "wrong", "POST")
            assert status == 401, doc
            assert len(seen) == 2  # nothing refused reached the UITD
        finally:
            stop.set()
            t.join(5)
            uitd.close()
        # not connected: a clear refusal, from the CLI too
        wait_until(lambda: ctr.devices[GATEWAY].link is None, "the link gone")
        result = CliRunner().invoke(app, ["collector", "uitd", "clock-sync", GATEWAY, "--url",
                                          base, "--token-file", str(token_file)])
        assert result.exit_code == 1
        assert "409" in result.output and "not connected" in result.output
