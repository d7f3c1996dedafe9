"""``firegate provision``: site files, credentials, broker entries, configs, the systemd unit.

The broker entries are proven in a real Mosquitto: a provisioned gateway connects with its
credentials, publishes as itself, and is refused (MQTT v5 reason 0x87) when it publishes or
subscribes as another gateway.
"""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from typer.testing import CliRunner

from common.config import ConfigError
from edge.config.load import load_config
from firegate.cli.provision import UNIT_FILE, register
from firegate.provision import (
    SERVICE_READABLE,
    acl_lines,
    collector_acl_lines,
    issue_client_certificate,
    load_site,
    mosquitto_password_line,
    provision,
)
from firegate.toml_text import dumps_toml
from tests.infra.mosquitto import MOSQUITTO_PASSWD
from tests.infra.tls import TestCA

from .helpers import COLLECTOR, COLLECTOR_ACL, ProvisionedBroker

SITE = """
[site]
id = "sh-pd-017"
gateway_prefix = "pump"
{ca}

[uplink]
url = "mqtts://localhost:{port}"
ca_file = "{ca_file}"
keepalive_s = 20

[wifi]
ssid = "pump-room"
password = "correct horse"

[firmware]
ring_kb = 16

[firmware.rs485]
uart = 2
tx = 17
rx = 16
de = 4

[[modbus]]
name = "rs485"
port = "uart"
baud = 19200
parity = "E"

[[modbus.device]]
unit = 3
profile = "pressure-b"
name = "喷淋主管"

[modbus.device.range.pressure]
min = 0.0
max = 1200.0

[[rule]]
name = "sprinkler-low"
match = "modbus/rs485/*/pressure"
low = 0.2
debounce_s = 10
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    ca = TestCA(tmp_path / "pki")
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(port=8883, ca_file=ca.cert, ca=""), "utf-8")
    return path


def test_password_line_is_mosquitto_passwds_format(tmp_path: Path) -> None:
    """Same user, password and salt: the line mosquitto_passwd writes, byte for byte."""
    pw = tmp_path / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(pw), "gw-1", "s3cret pass"], check=True,
                   capture_output=True)
    theirs = pw.read_text().strip()
    salt = base64.b64decode(theirs.split("$")[3])
    assert mosquitto_password_line("gw-1", "s3cret pass", salt=salt) == theirs
    assert mosquitto_password_line("gw-1", "other", salt=salt) != theirs
    with pytest.raises(ValueError, match="cannot contain"):
        mosquitto_password_line("a:b", "x")


class Gateway:
    """A paho MQTT v5 client logged in as a provisioned gateway; PUBACK and SUBACK reason codes
    are collected per message id."""

    def __init__(self, broker: ProvisionedBroker, user: str, password: str) -> None:
        assert broker.ca is not None and broker.tls_port is not None
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.received: list[str] = []
        self.connack: ReasonCode | None = None
        self.done = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
        c.username_pw_set(user, password)
        c.tls_set(ca_certs=str(broker.ca.cert))
        c.on_connect = self._on_connect
        c.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc)
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self.subacks.__setitem__(mid, rcs)
        c.on_message = lambda _c, _u, msg: self.received.append(msg.topic)
        self.client = c
        c.connect("localhost", broker.tls_port)
        c.loop_start()
        assert self.done.wait(20), "no CONNACK"

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.connack = rc
        self.done.set()

    def publish(self, topic: str) -> ReasonCode:
        info = self.client.publish(topic, b'{"v":1}', qos=1)
        info.wait_for_publish(20)
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> ReasonCode:
        _, mid = self.client.subscribe(topic, qos=1)
        for _ in range(400):
            if mid in self.subacks:
                return self.subacks[mid][0]
            threading.Event().wait(0.05)
        raise AssertionError("no SUBACK")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def two_gateways(tmp_path: Path) -> Iterator[tuple[ProvisionedBroker, list[Any]]]:
    broker = ProvisionedBroker(tmp_path / "broker", users=dict([COLLECTOR]), tls=True)
    assert broker.ca is not None
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(port=broker.tls_port, ca_file=broker.ca.cert, ca=""), "utf-8")
    cfg = load_site(site)
    provs = [provision(cfg, "firmware", gateway_id=g) for g in ("pump-a", "pump-b")]
    broker.passwd_lines += [p.passwd_line for p in provs]
    broker.acl = COLLECTOR_ACL + "".join("\n".join(p.acl) + "\n" for p in provs)
    broker.start()
    yield broker, provs
    broker.stop()


def test_a_provisioned_gateway_can_only_publish_as_itself(
        two_gateways: tuple[ProvisionedBroker, list[Any]]) -> None:
    broker, (a, b) = two_gateways
    creds = a.credentials
    gw = Gateway(broker, creds.username, creds.password)
    try:
        assert gw.connack is not None and not gw.connack.is_failure
        for channel in ("records", "status", "health", "cmd/ack"):
            rc = gw.publish(f"firegate/v1/pump-a/{channel}")
            assert not rc.is_failure, rc  # success (0x10 "no matching subscribers" is one)
        assert gw.subscribe("firegate/v1/pump-a/cmd").value == 1  # granted QoS 1
        # Mosquitto grants any subscription and applies "read" to each message: pump-a may
        # listen on pump-b's cmd topic, but nothing sent there reaches it
        gw.subscribe("firegate/v1/pump-b/cmd")
        cloud = Gateway(broker, *COLLECTOR)
        try:
            for target in ("pump-b", "pump-a"):
                assert not cloud.publish(f"firegate/v1/{target}/cmd").is_failure
        finally:
            cloud.close()
        for _ in range(400):  # pump-b's was sent first: delivered in order, it would be here
            if gw.received:
                break
            threading.Event().wait(0.05)
        assert gw.received == ["firegate/v1/pump-a/cmd"]
        # last: Mosquitto 2.0.11 disconnects a v5 client after a refused publish
        refused = gw.publish(f"firegate/v1/{b.credentials.gateway_id}/records")
        assert refused.value == 0x87 and refused.getName() == "Not authorized"
    finally:
        gw.close()
    wrong = Gateway(broker, creds.username, creds.password + "x")
    try:
        assert wrong.connack is not None and wrong.connack.is_failure  # bad user name or pw
    finally:
        wrong.close()


def test_acl_lines() -> None:
    """From the contract's channel table: a gateway writes its upward channels, reads its
    downward ones; a collector reads everything and writes only the downward channels."""
    assert acl_lines("pump-a", "pump-a") == [
        "user pump-a", "topic write firegate/v1/pump-a/records",
        "topic write firegate/v1/pump-a/status", "topic write firegate/v1/pump-a/health",
        "topic write firegate/v1/pump-a/cmd/ack", "topic read firegate/v1/pump-a/cmd",
        "topic read firegate/v1/pump-a/stored"]
    assert collector_acl_lines("firegate-collector-c1") == [
        "user firegate-collector-c1", "topic read firegate/v1/#",
        "topic write firegate/v1/+/cmd", "topic write firegate/v1/+/stored"]


def test_firmware_config(site: Path) -> None:
    result = provision(load_site(site), "firmware")
    cfg = json.loads(result.files["config.json"][0])
    gw = result.credentials.gateway_id
    assert gw.startswith("pump-") and len(gw) == len("pump-") + 6
    assert cfg["gateway"] == {"id": gw, "site": "sh-pd-017"}
    assert cfg["wifi"] == {"ssid": "pump-room", "password": "correct horse"}
    mq = cfg["mqtt"]
    assert (mq["host"], mq["port"], mq["tls"], mq["username"]) == ("localhost", 8883, True, gw)
    assert mq["password"] == result.credentials.password and len(mq["password"]) == 32
    assert mq["ca"].startswith("-----BEGIN CERTIFICATE-----") and mq["keepalive_s"] == 20
    assert (mq["delete_on"], mq["confirm_timeout_s"]) == ("stored", 60.0)  # the agent's rule
    assert cfg["ring"]["capacity_kb"] == 16
    bus = cfg["modbus"]
    assert bus["transport"] == "uart"
    assert bus["uart"] == {"id": 2, "tx": 17, "rx": 16, "de": 4, "baud": 19200, "parity": "E",
                           "stopbits": 1}
    dev = bus["devices"][0]
    assert (dev["unit"], dev["name"], dev["profile"]) == (3, "喷淋主管", "pressure-b")
    point = dict(zip(bus["point_fields"], dev["points"][0], strict=True))
    assert point["maximum"] == 1200.0  # the range override of the site file
    assert point["rule"] == 0 and cfg["rules"][0]["debounce_s"] == 10.0
    assert result.files["config.json"][1] == 0o600


def test_agent_config_is_loaded_by_the_agent(tmp_path: Path, site: Path) -> None:
    """The agent's config written by provisioning passes the agent's own loader, with the
    [gateway] and [uplink] keys the agent reads and the site's sensor map unchanged."""
    cfg = load_site(site)
    result = provision(cfg, "agent", config_dir=tmp_path)
    for name, (data, mode) in result.files.items():
        (tmp_path / name).write_bytes(data)
        (tmp_path / name).chmod(mode)
    text = (tmp_path / "gateway.toml").read_text()
    assert text.startswith(f"# firegate agent config for gateway {result.credentials.gateway_id}")
    raw = tomllib.loads(text)
    assert set(raw) == {"gateway", "uplink", "modbus", "rule"}
    assert raw["uplink"]["password_file"] == str(tmp_path / "mqtt-password")
    agent = load_config(tmp_path / "gateway.toml")
    gw = result.credentials.gateway_id
    assert (agent.gateway.id, agent.gateway.site) == (gw, "sh-pd-017")
    assert agent.uplink is not None
    assert (agent.uplink.username, agent.uplink.password) == (gw, result.credentials.password)
    assert agent.uplink.ca_file == tmp_path / "ca.crt" and agent.uplink.tls
    assert agent.modbus[0].devices[0].name == "喷淋主管" and agent.rules[0].low == 0.2
    # the agent's service user reads both (group firegate); gateway.toml may hold BLE keys
    assert result.files["mqtt-password"][1] == SERVICE_READABLE == 0o640
    assert result.files["gateway.toml"][1] == SERVICE_READABLE


def test_client_certificate_from_the_site_ca(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "site-ca", "site CA")
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(port=8883, ca_file=ca.cert, ca=(
        f'client_ca_cert = "{ca.cert}"\nclient_ca_key = "{ca.pair.key}"')), "utf-8")
    result = provision(load_site(site), "agent", client_cert=True, config_dir=tmp_path)
    cert = x509.load_pem_x509_certificate(result.files["client.crt"][0])
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    gw = result.credentials.gateway_id
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == gw
    assert cert.issuer == ca_cert.subject
    cert.verify_directly_issued_by(ca_cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    key = result.files["client.key"]
    assert key[1] == SERVICE_READABLE  # the agent reads it
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    private = load_pem_private_key(key[0], None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert private.public_key().public_numbers() == public.public_numbers()
    raw = tomllib.loads(result.files["gateway.toml"][0].decode())
    assert raw["uplink"]["cert_file"] == str(tmp_path / "client.crt")
    with pytest.raises(ValueError):
        issue_client_certificate(ca.cert.read_bytes(), b"not a key", gw)


@pytest.mark.parametrize(("patch", "key", "message"), [
    (("[site]\n", "[sites]\n"), "site", "is required"),
    (('id = "sh-pd-017"', 'id = "sh pd"'), "site.id", "must be 1-64 chars"),
    (("keepalive_s = 20", 'username = "x"'), "uplink.username", "generated per gateway"),
    (("mqtts://localhost", "http://localhost"), "uplink.url", "mqtt://host"),
    (('password = "correct horse"', 'password = "short"'), "wifi.password", "8-63"),
    (("tx = 17", "tx = 99"), "firmware.rs485.tx", "at most 48"),
    (("ring_kb = 16", "ring_kb = 16\ncolour = 1"), "firmware.colour", "unknown key"),
    (('profile = "pressure-b"', 'profile = "presure-b"'), "modbus[0].device[0].profile",
     "unknown profile"),
    (("debounce_s = 10", 'debounce_s = 10\nunit = "kPa"'), "rule[0].unit", "reports 'MPa'"),
    (('port = "uart"', 'port = "COM3"'), "modbus[0].port", "must be \"uart\""),
])
def test_bad_site_files_name_the_key(tmp_path: Path, site: Path, patch: tuple[str, str],
                                     key: str, message: str) -> None:
    text = site.read_text("utf-8")
    assert patch[0] in text
    site.write_text(text.replace(patch[0], patch[1], 1), "utf-8")
    with pytest.raises(ConfigError) as err:
        provision(load_site(site), "firmware")
    assert err.value.key == key
    assert message in str(err.value)


def test_two_buses_are_one_too_many_for_an_esp32(site: Path) -> None:
    site.write_text(site.read_text("utf-8") + '\n[[modbus]]\nname = "b2"\nhost = "10.0.0.5"\n'
                    '[[modbus.device]]\nunit = 1\nprofile = "level"\n', "utf-8")
    cfg = load_site(site)
    provision(cfg, "agent")  # a Pi serves both
    with pytest.raises(ConfigError, match="exactly one"):
        provision(cfg, "firmware")


def test_toml_writer_round_trips_after_its_comment() -> None:
    """The header is a comment; the data (written by tomli-w) reads back equal."""
    data: dict[str, Any] = {
        "gateway": {"id": "g-1", "site": "s", "n": 3, "x": 1.5, "on": True},
        "uplink": {"url": "mqtt://h", "weird key": 'quote " back \\ tab \t 中文'},
        "modbus": [{"name": "a", "device": [{"unit": 1, "range": {"pressure": {"min": 0.0}}},
                                            {"unit": 2, "list": [1, 2]}]},
                   {"name": "b", "device": [{"unit": 3}]}],
        "modbus_profiles": {"p1": {"status": [{"bits": {"0": "fault", "8": "x"}}]}},
    }
    text = dumps_toml(data, "header\n\nline")
    assert text.startswith("# header\n#\n# line\n\n")
    assert tomllib.loads(text) == data


def _cli(*args: str) -> Any:
    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)  # two commands: `provision` stays a subcommand
    return CliRunner().invoke(app, ["provision", *args])


def test_cli_writes_files_and_prints_the_broker_entries(tmp_path: Path, site: Path) -> None:
    out = tmp_path / "node"
    res = _cli("--site", str(site), "--kind", "firmware", "--out", str(out),
               "--gateway-id", "pump-room-1")
    assert res.exit_code == 0, res.output
    assert "gateway pump-room-1 (site sh-pd-017, firmware)" in res.output
    line = (out / "mosquitto.passwd").read_text().strip()
    assert line.startswith("pump-room-1:$7$101$") and line in res.output
    assert "topic write firegate/v1/pump-room-1/records" in res.output
    assert "topic read firegate/v1/pump-room-1/stored" in res.output
    assert stat.S_IMODE((out / "config.json").stat().st_mode) == 0o600
    conf = (out / "mosquitto-firegate.conf").read_text()
    assert "use_username_as_clientid true" in conf and "/etc/mosquitto/conf.d" in res.output
    again = _cli("--site", str(site), "--kind", "firmware", "--out", str(out))
    assert again.exit_code == 2 and "already holds a provisioned gateway" in again.output
    forced = _cli("--site", str(site), "--kind", "firmware", "--out", str(out), "--force",
                  "--gateway-id", "pump-room-1")
    assert forced.exit_code == 0
    assert (out / "mosquitto.passwd").read_text().strip() != line  # new credentials


def test_cli_dry_run_and_unit_install(tmp_path: Path, site: Path) -> None:
    out, units = tmp_path / "pi", tmp_path / "units"
    res = _cli("--site", str(site), "--kind", "agent", "--out", str(out), "--install-unit",
               "--unit-dir", str(units), "--dry-run", "--group", "4242")
    assert res.exit_code == 0, res.output
    assert f"would write {out}/gateway.toml" in res.output
    assert f"would write {out}/mqtt-password (33 bytes, mode 640, group 4242)" in res.output
    assert f"would install {UNIT_FILE} as {units}/firegate-agent.service" in res.output
    assert not out.exists() and not units.exists()
    res = _cli("--site", str(site), "--kind", "agent", "--out", str(out), "--install-unit",
               "--unit-dir", str(units), "--group", "4242")
    assert res.exit_code == 0, res.output
    assert (units / "firegate-agent.service").read_bytes() == UNIT_FILE.read_bytes()
    assert "systemctl daemon-reload" in res.output
    # the unit runs the agent as firegate: its group must exist to own the agent's secrets
    nogroup = _cli("--site", str(site), "--kind", "agent", "--out", str(tmp_path / "x"),
                   "--install-unit", "--unit-dir", str(units), "--group", "no-such-group-x")
    assert nogroup.exit_code == 2 and "useradd" in nogroup.output
    assert not (tmp_path / "x").exists()
    bad = _cli("--site", str(site), "--kind", "firmware", "--install-unit")
    assert bad.exit_code == 2 and "only for --kind agent" in bad.output
    wrong = _cli("--site", str(site), "--kind", "esp8266")
    assert wrong.exit_code == 2 and "--kind" in wrong.output
    missing = _cli("--site", str(tmp_path / "nope.toml"), "--kind", "agent")
    assert missing.exit_code == 2 and "cannot read" in missing.output


def test_a_plaintext_broker_elsewhere_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    """Every gateway gets a password, so the agent's rule (no password in plaintext to a host
    that is not loopback) is applied when provisioning: a config the agent would refuse to
    load is never written or flashed. ``allow_plaintext = true`` is the site's explicit
    choice, and the agent's config carries it."""
    site = tmp_path / "site.toml"
    text = '[site]\nid = "s"\n[uplink]\nurl = "mqtt://broker.lan:1883"\n'
    site.write_text(text, "utf-8")
    with pytest.raises(ConfigError) as info:
        load_site(site)
    assert info.value.key == "uplink.url" and "allow_plaintext" in str(info.value)
    site.write_text(text + "allow_plaintext = true\n", "utf-8")
    result = provision(load_site(site), "agent", config_dir=tmp_path)
    agent = tomllib.loads(result.files["gateway.toml"][0].decode())
    assert agent["uplink"]["allow_plaintext"] is True
