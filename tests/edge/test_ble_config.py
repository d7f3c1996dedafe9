"""``[ble]`` parser: defaults, the commented sample, key sources, and every error message."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from common.config import ConfigError, Table
from edge.config.ble import (
    BleConfig,
    BleDeviceConfig,
    DeviceKind,
    ScanningMode,
    parse_ble,
    parse_mac,
)

ROOT = Path(__file__).resolve().parents[2]
# The sample is written for the lead to merge into edge/gateway.example.toml; once merged, the
# repo's copy is the one tested.
SAMPLES = (ROOT / "edge" / "gateway.example.toml", Path("/tmp/brief/out/ble.toml"))
KEY_HEX = "231d39c1d7cc1ab1aee224cd096db932"
DOOR = "A4:C1:38:00:00:01"


def parse(data: dict[str, Any], *, base_dir: Path | None = None,
          env: dict[str, str] | None = None) -> BleConfig:
    return parse_ble(Table(data, "ble", base_dir=base_dir, env=env or {}))


def error(data: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data, **kwargs)
    return str(info.value)


def test_defaults_are_what_a_field_install_expects() -> None:
    cfg = parse({"device": [{"address": "a4:c1:38:00:00:01"}]})
    assert cfg == BleConfig(devices=(BleDeviceConfig(DOOR),))
    assert (cfg.adapter, cfg.scanning_mode, cfg.offline_factor) == ("hci0", ScanningMode.PASSIVE,
                                                                     3.0)
    device = cfg.devices[0]
    assert (device.expected_interval_s, device.offline_after_s, device.kind, device.key) == (
        60.0, 180.0, DeviceKind.SENSOR, None)
    assert cfg.device("a4:C1:38:00:00:01") is device
    assert cfg.device("A4:C1:38:00:00:02") is None


def test_empty_section_is_valid_and_accepts_nothing() -> None:
    assert parse({}).devices == ()


def test_the_commented_sample_is_accepted() -> None:
    sample = next((p for p in SAMPLES if p.exists() and "[ble]" in p.read_text()), None)
    assert sample is not None, f"no [ble] sample in {SAMPLES}"
    data = tomllib.loads(sample.read_text())
    cfg = parse(data["ble"], base_dir=sample.parent)
    assert [d.address for d in cfg.devices] == [DOOR, "A4:C1:38:00:00:05", "A4:C1:38:00:00:06"]
    assert cfg.devices[1].key == bytes.fromhex(KEY_HEX)
    assert cfg.devices[1].offline_after_s == 45.0
    assert cfg.devices[2].kind is DeviceKind.CALLPOINT
    assert cfg.devices[2].offline_after_s == 900.0  # 300 s x offline_factor 3


def test_offline_after_follows_the_factor_unless_given() -> None:
    cfg = parse({"offline_factor": 2.5, "device": [
        {"address": DOOR, "expected_interval_s": 10},
        {"address": "A4:C1:38:00:00:02", "expected_interval_s": 10, "offline_after_s": 12.5},
    ]})
    assert [d.offline_after_s for d in cfg.devices] == [25.0, 12.5]


def test_key_inline_from_file_and_from_environment(tmp_path: Path) -> None:
    (tmp_path / "door.key").write_text(KEY_HEX.upper() + "\n")
    cfg = parse({"device": [
        {"address": DOOR, "key": KEY_HEX},
        {"address": "A4:C1:38:00:00:02", "key_file": "door.key"},
        {"address": "A4:C1:38:00:00:03", "key_env": "SMOKE_KEY"},
    ]}, base_dir=tmp_path, env={"SMOKE_KEY": KEY_HEX})
    assert {d.key for d in cfg.devices} == {bytes.fromhex(KEY_HEX)}
    assert KEY_HEX not in repr(cfg)  # keys stay out of logs and tracebacks


def test_mac_helper() -> None:
    assert parse_mac("a4:c1:38:0a:0b:0c") == "A4:C1:38:0A:0B:0C"
    with pytest.raises(ValueError, match="must be a MAC address like A4:C1:38:00:00:01"):
        parse_mac("A4-C1-38-00-00-01")


@pytest.mark.parametrize(("data", "message"), [
    ({"adapter": "bt0"},
     "ble.adapter: must be an adapter name like hci0, got 'bt0'"),
    ({"scanning_mode": "aggressive"},
     "ble.scanning_mode: must be one of 'passive', 'active', got 'aggressive'"),
    ({"offline_factor": 1},
     "ble.offline_factor: must be at least 1.5, got 1"),
    ({"restart_backoff_s": 10, "restart_backoff_max_s": 5},
     "ble.restart_backoff_max_s: must be at least restart_backoff_s (10), got 5"),
    ({"watchdog_s": 0},
     "ble.watchdog_s: must be at least 0.05, got 0"),
    ({"scan": True},
     "ble.scan: unknown key; allowed here: adapter, device, offline_factor, "
     "restart_backoff_max_s, restart_backoff_s, scanning_mode, watchdog_s"),
    ({"device": {"name": "no address"}},
     "ble.device[0].address: is required"),
    ({"device": [{"address": "A4:C1:38:00:00:1"}]},
     "ble.device[0].address: must be a MAC address like A4:C1:38:00:00:01, "
     "got 'A4:C1:38:00:00:1'"),
    ({"device": [{"address": "G4:C1:38:00:00:01"}]},
     "ble.device[0].address: must be a MAC address like A4:C1:38:00:00:01, "
     "got 'G4:C1:38:00:00:01'"),
    ({"device": [{"address": DOOR}, {"address": "a4:c1:38:00:00:01"}]},
     "ble.device[1].address: A4:C1:38:00:00:01 is already declared in device[0]"),
    ({"device": [{"address": DOOR, "key": "00112233"}]},
     "ble.device[0].key: must give 32 hexadecimal characters (the 16-byte BTHome bind key), "
     "got 8 characters"),
    ({"device": [{"address": DOOR, "key": "x" * 32}]},
     "ble.device[0].key: must give 32 hexadecimal characters (the 16-byte BTHome bind key), "
     "got 32 characters"),
    ({"device": [{"address": DOOR, "key": KEY_HEX, "key_env": "K"}]},
     "ble.device[0].key: give only one of key, key_env"),
    ({"device": [{"address": DOOR, "key_env": "NOT_SET"}]},
     "ble.device[0].key_env: environment variable NOT_SET is not set"),
    ({"device": [{"address": DOOR, "kind": "smoke"}]},
     "ble.device[0].kind: must be one of 'sensor', 'callpoint', got 'smoke'"),
    ({"device": [{"address": DOOR, "expected_interval_s": 0}]},
     "ble.device[0].expected_interval_s: must be at least 0.1, got 0"),
    ({"device": [{"address": DOOR, "expected_interval_s": 30, "offline_after_s": 30}]},
     "ble.device[0].offline_after_s: must be greater than expected_interval_s (30), got 30"),
    ({"device": [{"address": DOOR, "name": "n" * 65}]},
     "ble.device[0].name: must be 1-64 characters, got 65"),
    ({"device": [{"address": DOOR, "bindkey": KEY_HEX}]},
     "ble.device[0].bindkey: unknown key; allowed here: address, expected_interval_s, key, "
     "key_env, key_file, kind, name, offline_after_s"),
])
def test_bad_values_are_refused_naming_the_key(data: dict[str, Any], message: str) -> None:
    assert error(data) == message


def test_bad_key_file_content_names_key_file_without_echoing_it(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("secret-but-wrong\n")
    message = error({"device": [{"address": DOOR, "key_file": str(tmp_path / "k")}]})
    assert message == ("ble.device[0].key_file: must give 32 hexadecimal characters (the "
                       "16-byte BTHome bind key), got 16 characters")
    missing = error({"device": [{"address": DOOR, "key_file": "nope.key"}]}, base_dir=tmp_path)
    assert missing == f"ble.device[0].key_file: file not found: {tmp_path / 'nope.key'}"


def test_an_empty_bind_key_names_where_it_came_from(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("\n")
    assert error({"device": [{"address": DOOR, "key": ""}]}) == \
        "ble.device[0].key: must not be empty"
    assert error({"device": [{"address": DOOR, "key_file": "k"}]}, base_dir=tmp_path) == \
        f"ble.device[0].key_file: {tmp_path / 'k'} is empty"
    assert error({"device": [{"address": DOOR, "key_env": "K"}]}, env={"K": ""}) == \
        "ble.device[0].key_env: environment variable K is empty"
    assert KEY_HEX not in repr(parse({"device": [{"address": DOOR, "key": KEY_HEX}]}))
