"""``firegate decode`` as a technician and a script use it: the installed console command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gb26875.golden import load

FIREGATE = shutil.which("firegate") or str(Path(sys.executable).parent / "firegate")
K = load("reference-examples").frames


def firegate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "300"}  # rich wraps error boxes at the terminal width
    return subprocess.run([FIREGATE, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, check=False, env=env)


def test_decode_hex_with_spaces_for_a_technician() -> None:
    r = firegate("decode", K[6].hex(" "))
    assert r.returncode == 0, r.stderr
    assert "analog_value" in r.stdout and "25.6 °C" in r.stdout and "温度" in r.stdout
    assert "点型感温火灾探测器" in r.stdout and "0x00000102" in r.stdout


def test_decode_json_from_stdin_several_frames_and_errors() -> None:
    bad = bytearray(K[0])
    bad[-3] ^= 1
    text = (K[5] + b"junk" + bytes(bad) + K[3]).hex()
    r = firegate("decode", "-", "--json", stdin=text)
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["frames"] == 2 and doc["errors"] == 2
    kinds = [(i["offset"], i["error"]["kind"]) for i in doc["items"] if "error" in i]
    assert kinds == [(len(K[5]), "garbage"), (len(K[5]) + 4, "bad_checksum")]
    op = doc["items"][0]["adu"]["objects"][0]
    assert op["flags"]["flags"] == ["check_post_answer"] and op["flags"]["zh"] == ["查岗应答"]
    assert doc["items"][-1]["adu"]["objects"][0]["state"]["flags"] == ["normal"]


def test_decode_file_of_raw_bytes(tmp_path: Path) -> None:
    capture = tmp_path / "capture.bin"
    capture.write_bytes(b"".join(load("every-upload-type").frames))
    r = firegate("decode", "--file", str(capture), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [i["adu"]["type_mark"] for i in doc["items"]] == [1, 2, 3, 4, 5, 6, 7, 8, 21, 24,
                                                             25, 26, 28]
    comp = doc["items"][1]["adu"]["objects"][0]
    assert comp["description"] == "3F 东侧走廊"
    assert comp["state"]["flags"] == ["normal", "fire_alarm"]


def test_adu_error_names_absolute_offset() -> None:
    from protocols.gb26875 import Frame, encode_frame

    broken = encode_frame(Frame(1, 2, bytes((1, 2, 1, 1, 0, 0))))  # 2 objects, 4 body bytes
    r = firegate("decode", "--json", (K[1] + broken).hex())
    assert r.returncode == 1
    item = json.loads(r.stdout)["items"][1]
    assert item["adu_error"]["kind"] == "object_size_mismatch"
    assert item["adu_error"]["offset"] == len(K[1]) + 27


@pytest.mark.parametrize(("args", "message"), [
    (["zz"], "not a hex digit"),
    (["abc"], "odd number"),
    (["--profile", "nope", "00"], "known: dahua"),
    ([], "no input"),
])
def test_bad_input_is_a_clear_error(args: list[str], message: str) -> None:
    r = firegate("decode", *args)
    assert r.returncode == 2
    assert message in " ".join(r.stderr.split())


def test_demo_runs() -> None:
    r = firegate("demo", "--codec")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3F 东侧走廊" in r.stdout and "delivered 6 uploads" in r.stdout
