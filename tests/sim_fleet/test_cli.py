"""``firegate sim fleet`` run for real as a subprocess, against a real broker and subscriber.

The subprocess is the installed console command, ``firegate sim fleet ...``
(``tests/infra/simproc.py``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from simulators.fleet import SeqRanges
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port
from tests.infra.simproc import sim_command

from .helpers import Collector

REPO = Path(__file__).resolve().parents[2]
SIM = sim_command("fleet")
LIMIT = 60.0  # bound on a run; never a timing assertion


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIM, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=LIMIT, check=False)


async def test_a_run_with_a_report(mosquitto: Mosquitto, tmp_path: Path) -> None:
    report_file = tmp_path / "ledger.json"
    with Collector(mosquitto.port) as sub:
        done = fleet("--broker", f"mqtt://127.0.0.1:{mosquitto.port}", "--gateways", "4",
                     "--records", "600", "--rate", "60", "--batch-interval", "0.2",
                     "--offline-fraction", "0.25", "--offline-for", "0.5", "--alarm-rate",
                     "0.02", "--seed", "9", "--confirm-timeout", "1", "--report",
                     str(report_file), "--quiet")
        assert done.returncode == 0, done.stderr
        assert "ok: every record confirmed by a collector" in done.stdout
        report = json.loads(report_file.read_text(encoding="utf-8"))
        gateways = report["gateways"]

        def arrived() -> bool:
            return all(sub.seqs(gw) == set(SeqRanges.from_ranges(g["seqs"]))
                       for gw, g in gateways.items())
        await sub.wait_for(arrived, "every record of the report at the subscriber")
    assert report["version"] == 2 and report["ok"] is True and report["errors"] == {}
    assert sorted(gateways) == [f"fleet-{i:05d}" for i in range(1, 5)]
    totals = report["totals"]
    # 600 device records, plus the dropped gateway's link_fault raise and clear.
    assert totals["produced"] == totals["delivered"] == 602 and totals["missing"] == 0
    assert totals["acked"] == totals["confirmed"] == 602  # by the broker, by the subscriber
    assert totals["drops"] == 1 and totals["gateways"] == 4
    assert totals["alarms"] == sum(g["alarms"] for g in gateways.values()) > 0
    (dropped,) = [g for g in gateways.values() if g["drops"]]
    assert dropped["catchups"][0]["alarms"] >= 2 and dropped["connects"] == 2
    for gw, g in gateways.items():
        assert g["seqs"] == [[1, g["produced"]]] and g["missing"] == []
        assert g["by_priority"]["measurement"] + g["alarms"] == g["produced"]
        assert g["site"] == "fleet-site-0001"
        assert g["unconfirmed"] == [] and g["confirmations"] > 0 and g["other_epoch"] == 0
        assert len(g["epoch"]) == 16
        dupes = sub.duplicates(gw)
        assert dupes <= set(SeqRanges.from_ranges(g["resent"]))
    assert report["config"]["gateways"] == 4 and report["config"]["seed"] == 9
    assert report["config"]["delete_on"] == "stored" and report["config"]["confirm_timeout"] == 1
    assert len({g["epoch"] for g in gateways.values()}) == 4  # one epoch per gateway


def test_the_puback_mode_needs_no_collector(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """--delete-on puback: the old deletion point, for comparison (nobody confirms here)."""
    report_file = tmp_path / "ledger.json"
    done = fleet("--broker", f"mqtt://127.0.0.1:{mosquitto.port}", "--gateways", "2",
                 "--records", "200", "--rate", "100", "--batch-interval", "0.2",
                 "--delete-on", "puback", "--report", str(report_file), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "ok: every record acknowledged by the broker" in done.stdout
    totals = json.loads(report_file.read_text(encoding="utf-8"))["totals"]
    assert (totals["acked"], totals["confirmed"], totals["delivered"]) == (200, 0, 200)
    done = fleet("--delete-on", "broker")
    assert done.returncode == 2
    assert "--delete-on: must be one of 'stored', 'puback', got 'broker'" in done.stderr


def test_refused_credentials_end_the_run_with_errors(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "b", users={"someone": "else"}, tls=True) as broker:
        assert broker.ca is not None
        done = fleet("--broker", f"mqtts://127.0.0.1:{broker.tls_port}", "--ca",
                     str(broker.ca.cert), "--username", "{gateway}", "--password", "wrong",
                     "--gateways", "3", "--duration", "600", "-q")
    # Every gateway refused: the run stops at once instead of producing for 600 s.
    assert done.returncode == 1
    assert "error: connack: Not authorized (x3)" in done.stderr
    assert "NOT OK" in done.stderr


def test_unreachable_broker_and_bad_url_are_clear_errors() -> None:
    port = free_port()
    done = fleet("--broker", f"mqtt://127.0.0.1:{port}", "--gateways", "2")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: cannot reach the broker at mqtt://127.0.0.1:{port}: connection refused")
    done = fleet("--broker", "127.0.0.1:1883")
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: --broker: '127.0.0.1:1883': expected "
                                   "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    done = fleet("--rate", "5", "--total-rate", "50")
    assert done.returncode == 2
    assert "--rate: give a rate per gateway or a total rate, not both" in done.stderr
