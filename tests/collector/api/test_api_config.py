"""``[http]`` and ``[[user]]``: what is accepted, and the error (naming the key, never the
token) for what is not."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from collector.config import CollectorConfig, ConfigError, parse_config
from tests.infra.tls import TestCA

TOKEN = "duty-" + "4f3e2d1c0b0a9988" * 3


def parse(http: dict[str, Any] | None, users: list[dict[str, Any]] | None = None,
          base: Path | None = None, env: dict[str, str] | None = None) -> CollectorConfig:
    doc: dict[str, Any] = {"collector": {"state_dir": "/tmp/x"}}
    if http is not None:
        doc["http"] = http
    if users is not None:
        doc["user"] = users
    return parse_config(doc, base_dir=base, env=env or {})


def refused(key: str, *fragments: str, **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(**kw)
    assert info.value.key == key, str(info.value)
    for f in fragments:
        assert f in info.value.message, info.value.message
    assert TOKEN not in str(info.value) and "short-token" not in str(info.value)
    return info.value.message


def test_defaults_and_full(tmp_path: Path) -> None:
    assert parse(None).http is None
    cfg = parse({}, [{"name": "duty-officer", "token": TOKEN}]).http
    assert cfg is not None
    assert (cfg.host, cfg.port, cfg.tls) == ("127.0.0.1", 8080, False)
    (user,) = cfg.users
    assert (user.name, user.role, user.sites) == ("duty-officer", "viewer", ("*",))
    assert TOKEN not in repr(cfg)
    (tmp_path / "duty.token").write_text(TOKEN + "\n")
    cfg = parse({"listen": "[::1]:9443", "public_url": "https://fire.example.com/"},
                [{"name": "a", "token_file": "duty.token", "role": "operator",
                  "sites": ["hz-*", "sh-0001"]},
                 {"name": "b", "token_env": "B_TOKEN", "role": "admin"}],
                base=tmp_path, env={"B_TOKEN": "b" * 32}).http
    assert cfg is not None
    assert (cfg.host, cfg.port, cfg.public_url) == ("::1", 9443, "https://fire.example.com")
    assert [u.token for u in cfg.users] == [TOKEN, "b" * 32]
    assert cfg.users[0].sites == ("hz-*", "sh-0001")


def test_tls_files(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    cert = ca.issue("api", server=True)
    cfg = parse({"listen": "0.0.0.0:8443", "cert_file": str(cert.cert),
                 "key_file": str(cert.key)}, [{"name": "a", "token": TOKEN}]).http
    assert cfg is not None and cfg.tls and cfg.base_url == "https://0.0.0.0:8443"
    refused("http.cert_file", "go together",
            http={"cert_file": str(cert.cert)}, users=[{"name": "a", "token": TOKEN}])
    refused("http.key_file", "not found",
            http={"cert_file": str(cert.cert), "key_file": str(tmp_path / "nope")},
            users=[{"name": "a", "token": TOKEN}])


def test_plaintext_beyond_loopback_is_refused() -> None:
    users = [{"name": "a", "token": TOKEN}]
    for host in ("0.0.0.0", "10.0.0.5", "[::]", "fire.example.com"):
        message = refused("http.listen", "cert_file", "allow_plaintext",
                          http={"listen": f"{host}:8080"}, users=users)
        assert "not a loopback" in message
    cfg = parse({"listen": "0.0.0.0:8080", "allow_plaintext": True}, users).http
    assert cfg is not None and cfg.allow_plaintext
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert parse({"listen": f"{host}:8080"}, users).http is not None


def test_tokens() -> None:
    refused("user[0].token", "at least 32 characters", "openssl rand",
            http={}, users=[{"name": "a", "token": "short-token"}])
    refused("user[0].token", "required", http={}, users=[{"name": "a"}])
    refused("user[0].token_env", "not set", http={}, users=[{"name": "a", "token_env": "NOPE"}])
    refused("user[0].token", "only one", http={},
            users=[{"name": "a", "token": TOKEN, "token_env": "X"}])
    refused("user[0].token", "white space", http={}, users=[{"name": "a", "token": TOKEN + " x"}])
    refused("user[1].token", "the same token", "user[0]", http={},
            users=[{"name": "a", "token": TOKEN}, {"name": "b", "token": TOKEN}])


def test_token_file_must_exist_and_not_be_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    refused("user[0].token_file", "empty", http={},
            users=[{"name": "a", "token_file": str(empty)}])
    refused("user[0].token_file", "not found", http={},
            users=[{"name": "a", "token_file": str(tmp_path / "missing")}])
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.token"
        locked.write_text(TOKEN)
        locked.chmod(0)
        refused("user[0].token_file", "cannot read", http={},
                users=[{"name": "a", "token_file": str(locked)}])


def test_users_and_sections() -> None:
    refused("user", "needs an [http]", http=None, users=[{"name": "a", "token": TOKEN}])
    refused("http", "at least one [[user]]", http={})
    refused("user[0].role", "'viewer', 'operator', 'admin'", http={},
            users=[{"name": "a", "token": TOKEN, "role": "root"}])
    refused("user[0].name", "1-64 chars", http={}, users=[{"name": "<b>", "token": TOKEN}])
    refused("user[1].name", "used twice", http={},
            users=[{"name": "a", "token": TOKEN}, {"name": "a", "token": "z" * 40}])
    refused("user[0].sites", "at least one", http={},
            users=[{"name": "a", "token": TOKEN, "sites": []}])
    refused("user[0].sites", "not a site id or glob", http={},
            users=[{"name": "a", "token": TOKEN, "sites": ["hz/../*"]}])
    refused("user[0].colour", "unknown key", http={},
            users=[{"name": "a", "token": TOKEN, "colour": "red"}])
    refused("http.port", "unknown key", "listen", http={"port": 8080},
            users=[{"name": "a", "token": TOKEN}])
    for listen in ("8080", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:0", "127.0.0.1:70000"):
        refused("http.listen", "HOST:PORT", http={"listen": listen},
                users=[{"name": "a", "token": TOKEN}])
    refused("http.public_url", "credentials", http={"public_url": "https://u:p@x.example"},
            users=[{"name": "a", "token": TOKEN}])
    refused("http.public_url", "http:// or https://", http={"public_url": "javascript:x"},
            users=[{"name": "a", "token": TOKEN}])
    refused("http.max_body_bytes", "at most", http={"max_body_bytes": 10**9},
            users=[{"name": "a", "token": TOKEN}])
    refused("http.max_limit", "at most 2000", http={"max_limit": 10_000},
            users=[{"name": "a", "token": TOKEN}])
    refused("http.max_connections", "more than max_stream_clients",
            http={"max_connections": 100, "max_stream_clients": 100},
            users=[{"name": "a", "token": TOKEN}])


def test_the_sample_files_http_section_loads(tmp_path: Path) -> None:
    """The commented [http] and [[user]] of collector/collector.example.toml, uncommented,
    are a valid config holding the defaults."""
    import tomllib

    sample = (Path(__file__).resolve().parents[3] / "collector" /
              "collector.example.toml").read_text(encoding="utf-8")
    block = sample[sample.index("# [http]"):sample.index("[metrics]")]
    lines = []
    for line in block.splitlines():
        text = line.removeprefix("#").removeprefix(" ")
        if text.startswith("#") or not text.strip():  # a commented-out option, a comment
            continue
        lines.append(text)
    doc = tomllib.loads("\n".join(lines))
    (tmp_path / "duty.token").write_text(TOKEN)
    doc["user"][0]["token_file"] = str(tmp_path / "duty.token")
    cfg = parse_config({"collector": {"state_dir": "/tmp/x"}, **doc}, env={}).http
    assert cfg is not None
    defaults = parse({}, [{"name": "duty-officer", "token": TOKEN, "role": "operator"}]).http
    assert cfg == defaults
