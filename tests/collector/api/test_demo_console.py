"""``firegate demo`` turns the console on: the collector config it writes has ``[http]`` on
loopback and one operator whose token is in a 0600 file, and the collector accepts it."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

from collector.config import parse_config
from firegate.demo.plan import Broker, Layout, collector_config, console_access, dumps_toml

from .conftest import OPERATOR, Api


def test_the_demo_config_has_the_console(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    access = console_access(layout)
    assert access.url.startswith("http://127.0.0.1:")
    assert len(access.token) >= 32
    mode = stat.S_IMODE(access.token_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert access.token_file.read_text() == access.token
    text = dumps_toml(collector_config(layout, Broker("mqtt://127.0.0.1:1883"), None, access),
                      "test")
    assert access.token not in text  # the file is named, the token is not copied
    cfg = parse_config(tomllib.loads(text), base_dir=tmp_path).http
    assert cfg is not None
    assert (cfg.host, cfg.port) == ("127.0.0.1", int(access.url.rsplit(":", 1)[1]))
    (user,) = cfg.users
    assert (user.name, user.role, user.token) == ("duty-officer", "operator", access.token)
    assert cfg.public_url == access.url
    # Two demos get different tokens.
    assert console_access(Layout(tmp_path / "other")).token != access.token
    # Without a console the config is as before.
    plain = parse_config(tomllib.loads(dumps_toml(collector_config(
        layout, Broker("mqtt://127.0.0.1:1883"), None), "test")), base_dir=tmp_path)
    assert plain.http is None


def test_the_demo_view_shows_who_acknowledged_what(api: Api, tmp_path: Path) -> None:
    """The demo's live view reads the open alarms and the acknowledgements from the API with
    the demo operator's token (here: the real API over the real alarm book)."""
    from firegate.demo.plan import ConsoleAccess
    from firegate.demo.watch import Observer

    access = ConsoleAccess(api.url, "duty-officer", OPERATOR, tmp_path / "unused")
    observer = Observer(tap=None, site="hz-0001", gateway="gw-1",  # type: ignore[arg-type]
                        registry=tmp_path / "none.sqlite", agent_state=tmp_path / "none.db",
                        store=None, console=access)
    observer._poll_console()
    assert (observer.view.open_alarms, observer.view.acknowledged) == (0, [])
    fire = api.raise_alarm(description="3F 东侧走廊 感烟探测器")
    api.raise_alarm(source="panel/1-1/43", type="fault", description="call point")
    api.client(OPERATOR).post(f"/api/v1/alarms/{fire.id}/ack", json={"note": "到场"})
    observer._poll_console()
    v = observer.view
    assert (v.open_alarms, v.unacknowledged) == (2, 1)
    (ack,) = v.acknowledged
    assert (ack.alarm_id, ack.by, ack.type, ack.note) == (fire.id, "duty-officer", "fire_alarm",
                                                        "到场")
    assert "感烟探测器" in ack.description
    assert v.new_acknowledged == [ack]
    observer._poll_console()
    assert observer.view.new_acknowledged == []  # shown once
    # A wrong token or no API: the view keeps what it had, no exception.
    observer.console = ConsoleAccess(api.url, "x", "w" * 40, tmp_path / "unused")
    observer._poll_console()
    assert observer.view.open_alarms == 2
