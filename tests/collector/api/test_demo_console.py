"""``firegate demo`` turns the console on: the collector config it writes has ``[http]`` on
loopback and one operator whose token is in a 0600 file, and the collector accepts it."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

from collector.config import parse_config
from firegate.demo.plan import Broker, Layout, collector_config, console_access, dumps_toml


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
