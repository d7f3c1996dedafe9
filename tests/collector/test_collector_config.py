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

EXAMPLE = Path(__file__).resolve().parents[2] / "collector" / "collector.example.toml"


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
    ("metrics", None), ("webhook", {"url": "http://h", "secret": "s"}),
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
        "webhook": [{"url": "https://hooks.example/a", "secret": "k", "events": ["*"]},
                    {"name": "fire", "url": "http://x/y", "secret_env": "HOOK",
                     "events": ["fire_alarm"], "restores": False}],
        "risk": {"pressure_critical_mpa": 0.05, "gateway_offline": "none"},
        "metrics": {"listen": ""},
    }, base_dir=tmp_path, env={"MQTT_PW": "pw", "HOOK": "hk"})
    assert cfg.collector_id == "c-2" and cfg.state_dir == tmp_path / "state"
    assert cfg.pipeline.group_max_messages == 8
    m = cfg.mqtt
    assert (m.host, m.port, m.tls, m.password, m.ca_file, m.share_group) == (
        "broker.example", 8884, True, "pw", tmp_path / "ca.crt", None)
    assert m.url == "mqtts://broker.example:8884" and m.client_id == "firegate-collector-c-2"
    assert (cfg.sink.influx_url, cfg.sink.token, cfg.sink.bucket) == (
        "https://influx.example", "tok-123", "b")
    assert cfg.webhooks[0].name == "webhook-1" and cfg.webhooks[0].events == set(NOTIFY_KINDS)
    assert cfg.webhooks[1].secret == "hk" and not cfg.webhooks[1].restores
    assert cfg.risk.pressure_critical_mpa == 0.05 and cfg.risk.gateway_offline is None
    assert cfg.metrics_listen is None
    assert isinstance(cfg, CollectorConfig)
    assert parse_config({"webhook": [{"url": "http://h", "secret": "s"}]}).webhooks[0].events \
        == set(DEFAULT_WEBHOOK_EVENTS)


@pytest.mark.parametrize(("doc", "message"), [
    ({"collector": {"zz": 1}}, "collector.zz: unknown key; allowed here: gap_grace_s, "
     "group_max_messages, group_max_points, group_wait_ms, health_interval_s, id, "
     "max_health_counters, max_health_links, max_sources_per_gateway, "
     "offline_factor, queue_size, report_gaps, retry_max_s, retry_min_s, "
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
    ({"webhook": [{"url": "mailto:x", "secret": "s"}]},
     "webhook[0].url: must be an http:// or https:// URL, got 'mailto:x'"),
    ({"webhook": [{"url": "http://a", "secret": "s"}, {"url": "http://b", "secret": "s",
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
        parse_config({"webhook": [{"url": "http://a", "secret": "s", "events": ["fire"]}]})
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
