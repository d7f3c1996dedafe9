"""The agent's whole config: the commented sample loads, and malformed files give one clear
message naming the key (through ``firegate check-config``, exit 2, no port opened)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from edge.config import ConfigError
from edge.config.load import load_config, parse_config
from tests.infra.simproc import FIREGATE, REPO

SAMPLE = REPO / "edge" / "gateway.example.toml"
BASE = '[gateway]\nid = "gw-1"\ndata_dir = "/tmp/firegate-test"\n'
PANEL = '[[panel]]\nname = "com1"\nport = "/dev/ttyUSB0"\n'
BUS = '[[modbus]]\nname = "bus{n}"\nport = "/dev/ttyUSB{n}"\n[[modbus.device]]\nunit = 1\n' \
      'profile = "pressure-a"\n'

CASES = {
    "no_gateway": (PANEL, "gateway: is required"),
    "bad_id": ('[gateway]\nid = "gw 1"\n' + PANEL,
               "gateway.id: must be 1-64 chars of A-Z a-z 0-9 _ . -, starting with a letter or "
               "digit, got 'gw 1'"),
    "unknown_top": (BASE + PANEL + "[panell]\nx = 1\n",
                    "panell: unknown key; allowed here: ble, gateway, modbus, modbus_profiles, "
                    "outbox, panel, rule, state, uplink"),
    "no_drivers": (BASE, "no drivers configured: add a [[panel]], [[modbus]] or [ble] table"),
    "two_transports": (BASE + PANEL + 'connect = "10.0.0.2:5000"\n',
                       "panel[0].connect: give exactly one of port (serial device), connect "
                       "(HOST:PORT of a UITD) or listen (HOST:PORT for the UITD to dial)"),
    "bad_profile": (BASE + BUS.format(n=1).replace("pressure-a", "presure-a"),
                    "modbus[0].device[0].profile: unknown profile 'presure-a'; built-in: "
                    "di-16, di-8, elec-fire, fire-pump, level, level-cm, pressure-a, "
                    "pressure-b, pressure-c, valve-4; custom: none"),
    "rule_order": (BASE + PANEL + '[[rule]]\nname = "r"\nmatch = "x"\nlow = 1.0\nhigh = 0.5\n',
                   "rule[0].high: must be greater than low (1), got 0.5"),
    "env_unset": (BASE + PANEL + '[uplink]\nurl = "mqtt://h"\nusername = "u"\n'
                  'password_env = "FIREGATE_NOPE"\n',
                  "uplink.password_env: environment variable FIREGATE_NOPE is not set"),
    "plaintext": (BASE + PANEL + '[uplink]\nurl = "mqtt://mqtt.example.com"\nusername = "u"\n'
                  'password = "pw"\n',
                  "uplink.url: mqtt:// sends the password unencrypted to mqtt.example.com (not a "
                  "loopback address); use mqtts://, or set allow_plaintext = true in [uplink] to "
                  "accept that risk"),
    "bad_url": (BASE + PANEL + '[uplink]\nurl = "http://h"\n',
                "uplink.url: must be mqtt://host[:port] or mqtts://host[:port], got 'http://h'"),
    "wrong_type": (BASE + PANEL + 'baud = "9600"\n',
                   "panel[0].baud: must be an integer, got a string"),
    "empty_bus": (BASE + '[[modbus]]\nname = "bus1"\nport = "/dev/ttyUSB1"\n',
                  "modbus[0].device: a bus needs at least one [[modbus.device]]"),
    "hysteresis": (BASE + PANEL + '[[rule]]\nname = "r"\nmatch = "x"\nlow = 0.1\nhigh = 0.2\n'
                   "hysteresis = 0.05\n",
                   "rule[0].hysteresis: must be less than half of high - low (0.05), got 0.05"),
}


def test_the_commented_sample_loads_with_every_section() -> None:
    cfg = load_config(SAMPLE)
    assert cfg.gateway.id == "gw-0001" and cfg.uplink is not None
    assert cfg.panels and cfg.modbus and cfg.ble is not None and cfg.rules
    res = subprocess.run([FIREGATE, "check-config", str(SAMPLE)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0 and "OK: gateway gw-0001" in res.stdout, res.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_config_names_the_key(case: str) -> None:
    text, message = CASES[case]
    with pytest.raises(ConfigError) as err:
        parse_config(tomllib.loads(text), env={})
    assert str(err.value) == message


def test_check_config_exit_code_and_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(CASES["bad_profile"][0], encoding="utf-8")
    res = subprocess.run([FIREGATE, "check-config", str(bad)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 2
    assert res.stderr.strip() == f"{bad}: {CASES['bad_profile'][1]}"


@pytest.mark.parametrize(("content", "message"), [
    (b"[gateway\nid = 1", "not valid TOML"),
    (b"\xff\xfe[gateway]", "is not UTF-8"),
])
def test_unreadable_files_are_clear(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_two_buses_and_secrets_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n", encoding="utf-8")
    text = (BASE + BUS.format(n=1) + BUS.format(n=2)
            + '[uplink]\nurl = "mqtts://h"\nusername = "u"\npassword_file = "mqtt-password"\n')
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    cfg = load_config(path)
    assert [b.name for b in cfg.modbus] == ["bus1", "bus2"]
    assert cfg.uplink is not None and cfg.uplink.password == "s3cret"
    assert "s3cret" not in repr(cfg)
