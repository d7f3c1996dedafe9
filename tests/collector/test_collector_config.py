"""The collector's TOML config: the sample file, defaults, secrets, and the error messages."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from collector.config import (
    DEFAULT_WEBHOOK_EVENTS,
    NOTIFY_KINDS,
    CollectorConfig,
    ConfigError,
    load_config,
    parse_config,
)
from collector.sinks.config import SinkConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "collector" / "collector.example.toml"
KEY = "e3b0c44298fc1c149afbf4c8996fb924"
"""A webhook secret of the minimum length (32 bytes)."""


def test_the_sample_file_loads_and_holds_the_defaults() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.source == EXAMPLE
    assert replace(cfg, source=None) == parse_config({}, base_dir=EXAMPLE.parent)
    assert cfg.state_dir == EXAMPLE.parent / "firegate-collector"
    assert cfg.sink.influx_url is None
    assert cfg.sink.sqlite_path == cfg.state_dir / "store.sqlite3"
    assert cfg.mqtt.client_id == "firegate-collector-collector-1"
    assert cfg.mqtt.share_group == "firegate" and cfg.mqtt.session_expiry_s == 86_400
    assert cfg.metrics_listen == ("127.0.0.1", 9108)
    assert cfg.webhooks == ()


def _allowed(section: str, base: dict[str, Any] | None = None) -> list[str]:
    doc: dict[str, Any] = {section: {**(base or {}), "zz_unknown": 1}}
    if section == "webhook":
        doc = {"webhook": [doc["webhook"]]}
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    return str(e.value).split("allowed here: ")[1].split(", ")


@pytest.mark.parametrize(("section", "base"), [
    ("collector", None), ("mqtt", None), ("influx", None), ("store", None), ("risk", None),
    ("metrics", None), ("webhook", {"url": "http://h", "secret": KEY}),
])
def test_the_sample_file_documents_every_key(section: str, base: dict[str, Any] | None) -> None:
    text = EXAMPLE.read_text()
    header = r"^# \[\[webhook\]\]$" if section == "webhook" else rf"^\[{section}\]$"
    part = re.split(header, text, maxsplit=1, flags=re.M)[1]
    part = re.split(r"^#? ?\[", part, maxsplit=1, flags=re.M)[0]
    for allowed in _allowed(section, base):
        key = allowed
        if key.endswith(("_file", "_env")) and key.rsplit("_", 1)[0] in ("password", "token",
                                                                          "secret"):
            key = key.rsplit("_", 1)[0]  # documented next to the inline form
        assert re.search(rf"^#? ?{key} = ", part, re.M), f"{section}.{key} not in the sample"


def test_a_full_config(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    (tmp_path / "token").write_text("tok-123\n")
    cfg = parse_config({
        "collector": {"id": "c-2", "state_dir": "state", "group_max_messages": 8},
        "mqtt": {"url": "mqtts://broker.example:8884", "username": "collector",
                 "password_env": "MQTT_PW", "ca_file": "ca.crt", "share_group": ""},
        "influx": {"url": "https://influx.example", "token_file": "token", "bucket": "b"},
        "webhook": [{"url": "https://hooks.example/a", "secret": KEY, "events": ["*"]},
                    {"name": "fire", "url": "http://x/y", "secret_env": "HOOK",
                     "events": ["fire_alarm"], "restores": False}],
        "risk": {"pressure_critical_mpa": 0.05, "gateway_offline": "none"},
        "metrics": {"listen": ""},
    }, base_dir=tmp_path, env={"MQTT_PW": "pw", "HOOK": "hk" * 16})
    assert cfg.collector_id == "c-2" and cfg.state_dir == tmp_path / "state"
    assert cfg.pipeline.group_max_messages == 8
    m = cfg.mqtt
    assert (m.host, m.port, m.tls, m.password, m.ca_file, m.share_group) == (
        "broker.example", 8884, True, "pw", tmp_path / "ca.crt", None)
    assert m.url == "mqtts://broker.example:8884" and m.client_id == "firegate-collector-c-2"
    assert (cfg.sink.influx_url, cfg.sink.token, cfg.sink.bucket) == (
        "https://influx.example", "tok-123", "b")
    assert cfg.webhooks[0].name == "webhook-1" and cfg.webhooks[0].events == set(NOTIFY_KINDS)
    assert cfg.webhooks[1].secret == "hk" * 16 and not cfg.webhooks[1].restores
    assert cfg.risk.pressure_critical_mpa == 0.05 and cfg.risk.gateway_offline is None
    assert cfg.metrics_listen is None
    assert isinstance(cfg, CollectorConfig)
    assert parse_config({"webhook": [{"url": "http://h", "secret": KEY}]}).webhooks[0].events \
        == set(DEFAULT_WEBHOOK_EVENTS)


@pytest.mark.parametrize(("doc", "message"), [
    ({"collector": {"zz": 1}}, "collector.zz: unknown key; allowed here: gap_grace_s, "
     "gap_max_age_s, group_max_messages, group_max_points, group_wait_ms, health_interval_s, "
     "id, "
     "max_health_counters, max_health_links, max_sources_per_gateway, "
     "offline_factor, queue_size, report_gaps, resend_after_s, resend_every_s, retry_max_s, "
     "retry_min_s, "
     "snapshot_interval_s, state_dir"),
    ({"collector": {"id": "a b"}}, "collector.id: must be 1-64 chars of A-Z a-z 0-9 _ . -, "
     "starting with a letter or digit, got 'a b'"),
    ({"mqtt": {"url": "tcp://x"}},
     "mqtt.url: must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'tcp://x'"),
    ({"collector": {"queue_size": 10}},
     "collector.queue_size: must be at least 2 x mqtt.receive_maximum (128), got 10"),
    ({"mqtt": {"password": "x"}}, "mqtt.password: a password needs a username"),
    ({"mqtt": {"password": "x", "password_env": "Y", "username": "u"}},
     "mqtt.password: give only one of password, password_env"),
    ({"mqtt": {"password_env": "NOPE", "username": "u"}},
     "mqtt.password_env: environment variable NOPE is not set"),
    ({"mqtt": {"share_group": "a/b"}}, "mqtt.share_group: must be 1-64 chars of A-Z a-z 0-9 "
     '_ . -, starting with a letter or digit (or "" for no shared subscription)'),
    ({"mqtt": {"receive_maximum": 0}}, "mqtt.receive_maximum: must be at least 1, got 0"),
    ({"influx": {"url": "ftp://x"}}, "influx.url: must be an http:// or https:// URL, got "
     "'ftp://x'"),
    ({"store": {"max_points_per_write": 6000}},
     "store.max_points_per_write: must be at most 5000, got 6000"),
    ({"webhook": [{"url": "http://a"}]}, "webhook[0].secret: is required (secret, secret_file "
     "or secret_env): receivers check the X-Firegate-Signature HMAC with it"),
    ({"webhook": [{"url": "mailto:x", "secret": KEY}]},
     "webhook[0].url: must be an http:// or https:// URL, got 'mailto:x'"),
    ({"webhook": [{"url": "http://a", "secret": KEY}, {"url": "http://b", "secret": KEY,
                                                       "name": "webhook-1"}]},
     "webhook[1].name: 'webhook-1' is used twice"),
    ({"risk": {"gateway_offline": "blue"}},
     "risk.gateway_offline: must be one of 'yellow', 'red', 'none', got 'blue'"),
    ({"metrics": {"listen": "abc"}},
     "metrics.listen: must be HOST:PORT (or \"\" for off), got 'abc'"),
    ({"mqtt": {"ca_file": "c.toml"}}, "mqtt.ca_file: needs an mqtts:// url, got "
     "'mqtt://127.0.0.1:1883'"),
    ({"collector": "x"}, "collector: must be a table, got a string"),
])
def test_errors_name_the_key(doc: dict[str, Any], message: str, tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("")
    with pytest.raises(ConfigError) as e:
        parse_config(doc, base_dir=tmp_path, env={})
    assert str(e.value) == message


def test_events_errors_list_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"webhook": [{"url": "http://a", "secret": KEY, "events": ["fire"]}]})
    assert str(e.value).startswith("webhook[0].events: 'fire' is not one of fire_alarm, fault")
    with pytest.raises(ConfigError) as e:
        parse_config({"risk": {"red_events": ["fire"]}})
    assert str(e.value).startswith("risk.red_events: 'fire' is not an event type (fire_alarm")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


# -- issue 14: secrets never empty, HMAC keys long enough, none in URLs or in clear text ------


def error(doc: dict[str, Any], tmp_path: Path | None = None,
          env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse_config(doc, base_dir=tmp_path, env=env or {})
    return e.value


HMAC_HINT = "(a random 32-byte secret: `openssl rand -hex 32`)"


def test_a_webhook_secret_needs_32_bytes_wherever_it_comes_from(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("x" * 31 + "\n")
    hook = {"url": "https://hooks.example/a"}
    inline = error({"webhook": [{**hook, "secret": "s"}]})
    assert (inline.key, str(inline)) == (
        "webhook[0].secret", f"webhook[0].secret: must be at least 32 bytes, got 1 {HMAC_HINT}")
    in_file = error({"webhook": [{**hook, "secret_file": "hook"}]}, tmp_path)
    assert str(in_file) == \
        f"webhook[0].secret_file: must be at least 32 bytes, got 31 {HMAC_HINT}"
    in_env = error({"webhook": [{**hook, "secret_env": "H"}]}, env={"H": ""})
    assert str(in_env) == "webhook[0].secret_env: environment variable H is empty"
    in_env = error({"webhook": [{**hook, "secret_env": "H"}]}, env={"H": "s3cret"})
    assert str(in_env) == f"webhook[0].secret_env: must be at least 32 bytes, got 6 {HMAC_HINT}"
    assert parse_config({"webhook": [{**hook, "secret": "键" * 11}]}).webhooks[0].secret \
        == "键" * 11  # 33 bytes of UTF-8: bytes count, not characters


@pytest.mark.parametrize(("doc", "env", "message"), [
    ({"mqtt": {"username": "u", "password": ""}}, {}, "mqtt.password: must not be empty"),
    ({"mqtt": {"username": "u", "password_env": "P"}}, {"P": ""},
     "mqtt.password_env: environment variable P is empty"),
    ({"influx": {"url": "https://db", "token": ""}}, {}, "influx.token: must not be empty"),
    ({"influx": {"url": "https://db", "token_env": "T"}}, {"T": ""},
     "influx.token_env: environment variable T is empty"),
])
def test_empty_credentials_are_refused(doc: dict[str, Any], env: dict[str, str],
                                       message: str) -> None:
    assert str(error(doc, env=env)) == message


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("  \n")
    assert str(error({"influx": {"url": "https://db", "token_file": "empty"}}, tmp_path)) == \
        f"influx.token_file: {tmp_path / 'empty'} is empty"


def plain(section: str, scheme: str, host: str, secret: str) -> str:
    return (f"{section}.url: {scheme}:// sends the {secret} unencrypted to {host} (not a "
            f"loopback address); use {scheme}s://, or set allow_plaintext = true in [{section}] "
            "to accept that risk")


@pytest.mark.parametrize(("doc", "message"), [
    ({"mqtt": {"url": "mqtt://broker.example", "username": "u", "password": "pw"}},
     plain("mqtt", "mqtt", "broker.example", "password")),
    ({"mqtt": {"url": "mqtt://10.1.2.3:1884", "username": "u", "password": "pw"}},
     plain("mqtt", "mqtt", "10.1.2.3", "password")),
    ({"influx": {"url": "http://influx.example:8086", "token": "t0ken"}},
     plain("influx", "http", "influx.example", "token")),
    ({"influx": {"url": "http://[fd00::5]:8086", "token": "user:password"}},
     plain("influx", "http", "fd00::5", "token")),
])
def test_credentials_in_clear_text_beyond_loopback_are_refused(doc: dict[str, Any],
                                                                message: str) -> None:
    e = error(doc)
    assert (e.key, str(e)) == (message.split(": ", 1)[0], message)


@pytest.mark.parametrize("doc", [
    {"mqtt": {"url": "mqtt://broker.example", "username": "u", "password": "pw",
              "allow_plaintext": True}},
    {"mqtt": {"url": "mqtt://localhost:1884", "username": "u", "password": "pw"}},
    {"mqtt": {"url": "mqtt://[::1]", "username": "u", "password": "pw"}},
    {"mqtt": {"url": "mqtts://broker.example", "username": "u", "password": "pw"}},
    {"mqtt": {"url": "mqtt://broker.example", "username": "u"}},
    {"influx": {"url": "http://influx.example:8086", "token": "t0ken", "allow_plaintext": True}},
    {"influx": {"url": "http://127.0.0.1:8086", "token": "t0ken"}},
    {"influx": {"url": "https://influx.example", "token": "t0ken"}},
    {"influx": {"url": "http://influx.example:8086"}},
])
def test_tls_loopback_no_secret_or_the_opt_in_pass(doc: dict[str, Any]) -> None:
    parse_config(doc, env={})


@pytest.mark.parametrize(("doc", "message"), [
    ({"mqtt": {"url": "mqtt://collector:s3cret@127.0.0.1"}},
     "mqtt.url: must not carry credentials; use username and password"),
    ({"mqtt": {"url": "tcp://collector:s3cret@x"}},
     "mqtt.url: must not carry credentials; use username and password"),
    ({"influx": {"url": "https://admin:s3cret@influx.example"}},
     'influx.url: must not carry credentials; use token (InfluxDB 1.8: token = '
     '"user:password")'),
    ({"webhook": [{"url": "https://bob:s3cret@hooks.example/a", "secret": KEY}]},
     "webhook[0].url: must not carry credentials; use secret (the receiver checks the "
     "X-Firegate-Signature HMAC)"),
])
def test_credentials_in_urls_are_refused_and_not_echoed(doc: dict[str, Any],
                                                        message: str) -> None:
    assert str(error(doc)) == message  # the password never reaches the message (or a log)


def test_secrets_stay_out_of_repr() -> None:
    cfg = parse_config({
        "mqtt": {"url": "mqtts://broker.example", "username": "u", "password": "mqtt-s3cret"},
        "influx": {"url": "https://influx.example", "token": "influx-s3cret"},
        "webhook": [{"url": "https://hooks.example/a", "secret": "hook-s3cret" * 3}],
    }, env={})
    assert (cfg.mqtt.password, cfg.sink.token) == ("mqtt-s3cret", "influx-s3cret")
    for text in (repr(cfg), str(cfg), repr(cfg.mqtt), repr(cfg.webhooks), repr(cfg.sink)):
        assert "s3cret" not in text


def test_a_hand_built_sink_config_refuses_credentials_in_its_url() -> None:
    with pytest.raises(ValueError) as e:
        SinkConfig(influx_url="http://admin:s3cret@influx.example:8086")
    assert str(e.value) == "influx url must not carry credentials; use token"
