"""``[uplink]`` parsing: defaults, every key, and the exact text of every refusal."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from common.config import ConfigError, Table
from edge.config.uplink import DeleteOn, MqttProtocol, UplinkConfig, parse_uplink

# The commented sample of this section (also handed to the lead for gateway.example.toml),
# with its commented keys switched on so that every key is parsed.
SAMPLE = """
[uplink]
url = "mqtts://mqtt.example.com:8883"
# protocol = "5"
# client_id = "gw-0001"
# username = "gw-0001"
# password_file = "/etc/firegate/mqtt-password"
# allow_plaintext = false
# ca_file = "/etc/firegate/ca.crt"
# cert_file = "/etc/firegate/gw-0001.crt"
# key_file = "/etc/firegate/gw-0001.key"
# tls_insecure = false
# keepalive_s = 30
# connect_timeout_s = 10
# reconnect_min_s = 1
# reconnect_max_s = 60
# batch_max_records = 1000
# max_inflight = 16
# health_interval_s = 60
# delete_on = "stored"
# confirm_timeout_s = 60
"""


def parse(data: dict[str, object], tmp_path: Path | None = None,
          env: dict[str, str] | None = None) -> UplinkConfig:
    return parse_uplink(Table(data, "uplink", base_dir=tmp_path, env=env or {}))


def error(data: dict[str, object], tmp_path: Path | None = None,
          env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        parse(data, tmp_path, env)
    return str(err.value)


def test_defaults() -> None:
    assert parse({"url": "mqtt://broker.local"}) == UplinkConfig(
        host="broker.local", port=1883, tls=False, protocol=MqttProtocol.V5, client_id=None,
        username=None, password=None, ca_file=None, cert_file=None, key_file=None,
        tls_insecure=False, keepalive_s=30, connect_timeout_s=10.0, reconnect_min_s=1.0,
        reconnect_max_s=60.0, batch_max_records=1000, max_inflight=16, health_interval_s=60.0)


@pytest.mark.parametrize(("url", "host", "port", "tls", "shown"), [
    ("mqtts://broker.local", "broker.local", 8883, True, "mqtts://broker.local:8883"),
    ("mqtt://10.0.0.2:1884", "10.0.0.2", 1884, False, "mqtt://10.0.0.2:1884"),
    ("mqtts://[::1]:9883/", "::1", 9883, True, "mqtts://[::1]:9883"),
])
def test_urls(url: str, host: str, port: int, tls: bool, shown: str) -> None:
    cfg = parse({"url": url})
    assert (cfg.host, cfg.port, cfg.tls, cfg.url) == (host, port, tls, shown)


def test_every_key(tmp_path: Path) -> None:
    for name in ("ca.crt", "gw.crt", "gw.key"):
        (tmp_path / name).write_text("PEM\n")
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = parse({
        "url": "mqtts://broker.local", "protocol": "3.1.1", "client_id": "gw-0001/a",
        "username": "gw-0001", "password_file": "pw", "ca_file": "ca.crt",
        "cert_file": "gw.crt", "key_file": "gw.key", "tls_insecure": True, "keepalive_s": 60,
        "connect_timeout_s": 5, "reconnect_min_s": 0.5, "reconnect_max_s": 120,
        "batch_max_records": 5000, "max_inflight": 4, "health_interval_s": 30,
    }, tmp_path)
    assert cfg == UplinkConfig(
        "broker.local", 8883, True, MqttProtocol.V311, "gw-0001/a", "gw-0001", "s3cret",
        tmp_path / "ca.crt", tmp_path / "gw.crt", tmp_path / "gw.key", True, 60, 5.0, 0.5,
        120.0, 5000, 4, 30.0)
    assert "s3cret" not in repr(cfg)
    assert cfg.effective_client_id("gw-x") == "gw-0001/a"
    assert parse({"url": "mqtt://h"}).effective_client_id("gw-x") == "gw-x"


def test_password_from_the_environment() -> None:
    cfg = parse({"url": "mqtts://h", "username": "u", "password_env": "MQTT_PW"},
                env={"MQTT_PW": "from-env"})
    assert cfg.password == "from-env"


def test_the_sample_section_parses_with_every_key(tmp_path: Path) -> None:
    assert parse(tomllib.loads(SAMPLE)["uplink"]) == UplinkConfig(
        "mqtt.example.com", 8883, tls=True)
    for name in ("ca.crt", "gw-0001.crt", "gw-0001.key", "mqtt-password"):
        (tmp_path / name).write_text("x\n")
    text = SAMPLE.replace("# ", "").replace("/etc/firegate/", f"{tmp_path}/")
    cfg = parse(tomllib.loads(text)["uplink"])
    assert (cfg.username, cfg.password, cfg.ca_file) == ("gw-0001", "x", tmp_path / "ca.crt")


HINT = "mqtt://host[:port] or mqtts://host[:port]"


@pytest.mark.parametrize(("data", "message"), [
    ({}, "uplink.url: is required"),
    ({"url": "http://h"}, f"uplink.url: must be {HINT}, got 'http://h'"),
    ({"url": "mqtt://"}, f"uplink.url: must be {HINT}, got 'mqtt://'"),
    ({"url": "mqtt://h:99999"},
     f"uplink.url: must be {HINT}, got 'mqtt://h:99999' (Port out of range 0-65535)"),
    ({"url": "mqtt://h:0"}, "uplink.url: port must be 1-65535, got 'mqtt://h:0'"),
    ({"url": "mqtt://u:p@h"}, "uplink.url: must not carry credentials; use username and password"),
    ({"url": "mqtt://h/topic"},
     f"uplink.url: must be {HINT} without a path or query, got 'mqtt://h/topic'"),
    ({"url": "mqtt://h", "protocol": 5}, "uplink.protocol: must be one of '5', '3.1.1', got 5"),
    ({"url": "mqtt://h", "client_id": "a b"},
     "uplink.client_id: must be 1-128 printable ASCII characters without spaces, got 'a b'"),
    ({"url": "mqtt://h", "password": "x"},
     "uplink.password: needs username (MQTT 3.1.1 sends no password without a user name)"),
    ({"url": "mqtt://h", "username": "u", "password": "x", "password_env": "X"},
     "uplink.password: give only one of password, password_env"),
    ({"url": "mqtt://h", "tls_insecure": True},
     "uplink.tls_insecure: applies only to an mqtts:// url"),
    ({"url": "mqtt://h", "keepalive_s": 2}, "uplink.keepalive_s: must be at least 5, got 2"),
    ({"url": "mqtt://h", "keepalive_s": 1.5},
     "uplink.keepalive_s: must be an integer, got a number"),
    ({"url": "mqtt://h", "reconnect_min_s": 10, "reconnect_max_s": 5},
     "uplink.reconnect_max_s: must be at least reconnect_min_s (10), got 5"),
    ({"url": "mqtt://h", "reconnect_min_s": 0},
     "uplink.reconnect_min_s: must be at least 0.1, got 0"),
    ({"url": "mqtt://h", "batch_max_records": 6000},
     "uplink.batch_max_records: must be at most 5000, got 6000"),
    ({"url": "mqtt://h", "max_inflight": 0}, "uplink.max_inflight: must be at least 1, got 0"),
    ({"url": "mqtt://h", "health_interval_s": "60"},
     "uplink.health_interval_s: must be a number, got a string"),
    ({"url": "mqtt://h", "qos": 0}, "uplink.qos: is not configurable: the contract sends "
                                    "everything at QoS 1 (QoS 0 would lose records)"),
    ({"url": "mqtt://h", "hots": "x"},
     "uplink.hots: unknown key; allowed here: allow_plaintext, batch_max_records, ca_file, "
     "cert_file, client_id, confirm_timeout_s, connect_timeout_s, delete_on, "
     "health_interval_s, keepalive_s, key_file, linger_ms, max_inflight, password, "
     "password_env, password_file, protocol, reconnect_max_s, reconnect_min_s, tls_insecure, "
     "url, username"),
    ({"url": "mqtt://h", "delete_on": "ack"},
     "uplink.delete_on: must be one of 'stored', 'puback', got 'ack'"),
    ({"url": "mqtt://h", "confirm_timeout_s": 1},
     "uplink.confirm_timeout_s: must be at least 5, got 1"),
    ({"url": "mqtt://h", "delete_on": "puback", "confirm_timeout_s": 30},
     'uplink.confirm_timeout_s: applies only to delete_on = "stored"'),
])
def test_refusals(data: dict[str, object], message: str) -> None:
    assert error(data) == message


def test_tls_file_refusals(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    (tmp_path / "gw.crt").write_text("x")
    assert error({"url": "mqtt://h", "ca_file": "ca.crt"}, tmp_path) == \
        "uplink.ca_file: applies only to an mqtts:// url"
    assert error({"url": "mqtts://h", "ca_file": "missing.crt"}, tmp_path) == \
        f"uplink.ca_file: file not found: {tmp_path / 'missing.crt'}"
    assert error({"url": "mqtts://h", "cert_file": "gw.crt"}, tmp_path) == \
        "uplink.key_file: cert_file and key_file go together"
    assert error({"url": "mqtts://h", "username": "u", "password_env": "NOPE"}, tmp_path) == \
        "uplink.password_env: environment variable NOPE is not set"


# -- issue 14: no empty passwords, no password in clear text beyond loopback ----------------


PLAIN = ("uplink.url: mqtt:// sends the password unencrypted to {host} (not a loopback address); "
         "use mqtts://, or set allow_plaintext = true in [uplink] to accept that risk")


@pytest.mark.parametrize(("url", "host"), [
    ("mqtt://broker.example", "broker.example"), ("mqtt://10.0.0.2:1884", "10.0.0.2"),
    ("mqtt://[fd00::2]", "fd00::2"), ("mqtt://0.0.0.0", "0.0.0.0"),
])
def test_a_password_over_plain_mqtt_to_another_host_is_refused(url: str, host: str) -> None:
    assert error({"url": url, "username": "u", "password": "pw"}) == PLAIN.format(host=host)


def test_a_password_from_a_file_or_the_environment_counts_too(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    text = PLAIN.format(host="h")
    assert error({"url": "mqtt://h", "username": "u", "password_file": "pw"}, tmp_path) == text
    assert error({"url": "mqtt://h", "username": "u", "password_env": "P"},
                 env={"P": "s3cret"}) == text


@pytest.mark.parametrize("url", ["mqtt://127.0.0.1:1883", "mqtt://127.8.0.1", "mqtt://[::1]",
                                 "mqtt://localhost:1884", "mqtts://broker.example"])
def test_a_password_may_go_to_loopback_or_over_tls(url: str) -> None:
    assert parse({"url": url, "username": "u", "password": "pw"}).password == "pw"


def test_allow_plaintext_is_the_explicit_opt_in() -> None:
    cfg = parse({"url": "mqtt://broker.example", "username": "u", "password": "pw",
                 "allow_plaintext": True})
    assert (cfg.tls, cfg.password) == (False, "pw")
    assert parse({"url": "mqtt://broker.example", "username": "u"}).username == "u"
    assert error({"url": "mqtt://h", "allow_plaintext": 1}) == \
        "uplink.allow_plaintext: must be true or false, got an integer"


def test_an_empty_password_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n")
    assert error({"url": "mqtts://h", "username": "u", "password": ""}) == \
        "uplink.password: must not be empty"
    assert error({"url": "mqtts://h", "username": "u", "password_file": "pw"}, tmp_path) == \
        f"uplink.password_file: {tmp_path / 'pw'} is empty"
    assert error({"url": "mqtts://h", "username": "u", "password_env": "P"}, env={"P": ""}) == \
        "uplink.password_env: environment variable P is empty"


def test_the_password_stays_out_of_repr() -> None:
    cfg = parse({"url": "mqtts://h", "username": "u", "password": "s3cret-pw"})
    assert "s3cret-pw" not in repr(cfg) and "s3cret-pw" not in str(cfg)


def test_the_gateway_sample_documents_every_uplink_key() -> None:
    example = Path(__file__).resolve().parents[2] / "edge" / "gateway.example.toml"
    section = example.read_text().split("\n[uplink]\n", 1)[1].split("\n[[", 1)[0]
    allowed = error({"url": "mqtt://h", "zz": 1}).split("allowed here: ")[1].split(", ")
    for key in allowed:
        if key in ("password", "password_env"):  # explained next to password_file
            assert key in section, key
        else:
            assert re.search(rf"^#? ?{key} = ", section, re.M), key


def test_records_are_deleted_when_stored_by_default_or_at_the_puback() -> None:
    cfg = parse({"url": "mqtt://h"})
    assert (cfg.delete_on, cfg.confirm_timeout_s) == (DeleteOn.STORED, 60.0)
    cfg = parse({"url": "mqtt://h", "confirm_timeout_s": 12.5})
    assert (cfg.delete_on, cfg.confirm_timeout_s) == (DeleteOn.STORED, 12.5)
    assert parse({"url": "mqtt://h", "delete_on": "puback"}).delete_on is DeleteOn.PUBACK
