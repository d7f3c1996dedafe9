"""The sample site file, and the firmware's answer to a config it cannot use."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from firegate.provision import load_site, provision
from tests.infra.tls import TestCA

from .helpers import FIRMWARE, HEAP, MICROPYTHON


def test_the_sample_site_file_provisions_both_kinds(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    shutil.copy(FIRMWARE / "site.example.toml", site)
    TestCA(tmp_path / "pki")
    shutil.copy(tmp_path / "pki" / "ca.crt", tmp_path / "broker-ca.crt")
    cfg = load_site(site)
    fw = json.loads(provision(cfg, "firmware").files["config.json"][0])
    assert [d["name"] for d in fw["modbus"]["devices"]] == [
        "hydrant riser 3F", "roof tank", "pump room board"]
    assert fw["modbus"]["uart"]["de"] == 4 and fw["ring"]["capacity_kb"] == 32
    agent = tomllib.loads(provision(cfg, "agent").files["gateway.toml"][0].decode())
    assert [d["unit"] for d in agent["modbus"][0]["device"]] == [1, 2, 5]


@pytest.mark.parametrize(("edit", "message"), [
    (None, "config: config.json: [Errno 2] ENOENT"),
    (lambda text: text[: len(text) // 2], "not valid JSON (cut short while copying?)"),
    (lambda text: text.replace('"port":', '"port":"1883","x":', 1), "mqtt.port: must be int"),
    (lambda text: text.replace('"v":2', '"v":1', 1), "v: must be 2"),
    (lambda text: text.replace('"point_fields":["name",', '"point_fields":["nam",', 1),
     "modbus.point_fields: lacks name"),
    (lambda text: text.replace('"confirm_timeout_s":60.0', '"confirm_timeout_s":0', 1),
     "mqtt.confirm_timeout_s: must be greater than 0"),
    (lambda text: text.replace('"confirm_timeout_s":60.0', '"confirm_timeout_s":"1m"', 1),
     "mqtt.confirm_timeout_s: must be float"),
    (lambda text: text.replace('"delete_on":"stored"', '"delete_on":"broker"', 1),
     "mqtt.delete_on: must be stored or puback, got 'broker'"),
])
def test_a_bad_config_stops_the_firmware_naming_the_key(
        tmp_path: Path, fw_build: Path, edit: object, message: str) -> None:
    node = tmp_path / "node"
    shutil.copytree(fw_build, node)
    site = tmp_path / "site.toml"
    site.write_text(
        '[site]\nid = "s"\n[uplink]\nurl = "mqtt://127.0.0.1:1883"\n[[modbus]]\nname = "b"\n'
        'port = "/dev/null"\n[[modbus.device]]\nunit = 1\nprofile = "level"\n')
    text = provision(load_site(site), "firmware").files["config.json"][0].decode()
    if callable(edit):
        (node / "config.json").write_text(edit(text))
    proc = subprocess.run([MICROPYTHON, "-X", f"heapsize={HEAP}", "main.py", "config.json"],
                          cwd=node, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stdout
