"""``firegate sim uitd-fleet`` as a real subprocess: flags, the printed UITD list, and a run
against the codec-built centre with its JSON report."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tomllib
from pathlib import Path

from collector.uitd.config import parse_gb26875
from common.config import Table
from protocols.gb26875 import address_from_int
from tests.infra.simproc import REPO, sim_command

from .helpers import WAIT, centre
from .test_fleet import is_fire

CMD = sim_command("uitd-fleet")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)


def test_print_uitd_list_is_a_collector_config() -> None:
    out = run("-n", "4", "--first-address", "0x0379", "--profile", "standard",
              "--profile", "hikvision", "--print-uitd-list")
    assert out.returncode == 0, out.stderr
    doc = tomllib.loads(out.stdout)
    entries = doc["gb26875"]["uitd"]
    assert [e["address"] for e in entries] == [f"0x{0x379 + i:012x}" for i in range(4)]
    assert [e["profile"] for e in entries] == ["standard", "hikvision"] * 2
    config = parse_gb26875(Table(doc).table("gb26875"))
    assert config is not None and len(config.uitds) == 4


def test_bad_flags_and_files_exit_2_naming_them(tmp_path: Path) -> None:
    for args, message in (
        (("--rate", "-5"), "error: --rate: must be at least 0, got -5"),
        (("--drop", "3"), "error: --drop: must be AT:FRACTION[:DURATION], got '3'"),
        (("--burst", "1:2"), "error: --burst: fraction: must be at most 1, got 2"),
        (("--first-address", "0xZZ"), "error: --first-address: must be 0x + hex digits"),
        (("--centre", "127.0.0.1:1", "--duration", "0"),
         "error: cannot reach the centre at 127.0.0.1:1: connection refused"),
    ):
        out = run(*args)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
    bad = tmp_path / "fleet.toml"
    bad.write_text("[uitd_fleet]\nprofiles = [\"dahau\"]\n", encoding="utf-8")
    out = run("--scenario", str(bad))
    assert out.returncode == 2
    assert f"error: {bad}: uitd_fleet.profiles[0]: must be one of" in out.stderr


async def test_a_run_reports_every_fire_alarm_the_centre_received(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    async with centre() as c:
        proc = await asyncio.create_subprocess_exec(
            *CMD, "--centre", c.address, "-n", "5", "--duration", "1.5", "--state-interval",
            "0", "--burst", "0.2:1:2", "--rate", "10", "--report", str(report), "-q",
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), WAIT * 3)
    assert proc.returncode == 0, stderr.decode()
    assert stdout.decode().startswith(f"dialing tcp {c.address} uitds 5")
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["ok"] and data["totals"]["fire_alarms"] == 10
    assert data["totals"]["confirmed"] == len(c.uploads) > 10
    fires = {(f.source, f.serial) for link, f in c.uploads if is_fire(link, f)}
    truth = {(address_from_int(int(a["uitd"], 16)), s) for a in data["fire_alarms"]
             for s in a["serials"]}
    assert fires == truth and len(fires) == 10
