"""The files ``firegate provision`` writes: modes, owners, links, and the service user reading them.

Issue 14 part 7: ``gateway.toml`` (BLE keys may be inline) was written 0644; ``mqtt-password``
0600 root:root, which the agent's unit (``User=firegate``) cannot read, so its
``ExecStartPre=firegate check-config`` failed on the documented ``--install-unit`` path. Now the
agent's secrets are 0640 with the service's group, written through no link with the mode set
before the content. The service user is played by ``setpriv`` (uid 65534, a gid of the test's
choosing: the group needs no entry in /etc/group), which needs root; the tests run as root here.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from firegate.cli.provision import UNIT_FILE, register, write_file
from firegate.provision import load_site, new_credentials
from tests.infra.tls import TestCA

REPO = Path(__file__).resolve().parents[2]
SERVICE_GID = 4242  # the "firegate" group of these tests
OTHER_GID = 4243
SERVICE_UID = 65534
SITE = """
[site]
id = "sh-pd-017"
gateway_prefix = "pump"

[uplink]
url = "mqtts://localhost:8883"
ca_file = "{ca_file}"

[[modbus]]
name = "rs485"
port = "/dev/ttyUSB0"

[[modbus.device]]
unit = 3
profile = "pressure-b"
"""
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                             reason="playing the service user needs root and setpriv")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    ca = TestCA(tmp_path / "pki")
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(ca_file=ca.cert), "utf-8")
    return path


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another uid can traverse (pytest's tmp_path is 0700 root)."""
    d = Path(tempfile.mkdtemp(prefix="fg-provision-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def _cli(*args: str) -> Any:
    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)
    return CliRunner().invoke(app, ["provision", *args])


def _mode(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_gid


@AS_ROOT
def test_the_agents_secrets_are_0640_for_the_service_group(tmp_path: Path, site: Path) -> None:
    out = tmp_path / "pi"
    res = _cli("--site", str(site), "--kind", "agent", "--out", str(out), "--group",
               str(SERVICE_GID))
    assert res.exit_code == 0, res.output
    for name in ("gateway.toml", "mqtt-password"):
        assert _mode(out / name) == (0o640, SERVICE_GID), name
        assert (out / name).stat().st_uid == 0  # root:<group>
    assert _mode(out / "mosquitto.passwd")[0] == 0o600
    for name in ("ca.crt", "mosquitto.acl", "mosquitto-firegate.conf"):
        assert _mode(out / name)[0] == 0o644, name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_without_the_group_here_they_are_0600_and_the_steps_say_how_to_install(
        tmp_path: Path, site: Path) -> None:
    """Provisioning on a PC for a Pi: no group firegate here, so owner only, and the next
    steps give the install command with the right owner and mode."""
    out = tmp_path / "pi"
    res = _cli("--site", str(site), "--kind", "agent", "--out", str(out))
    if res.exit_code == 0 and "sudo install" not in res.output:
        pytest.skip("this machine has a group firegate")
    assert res.exit_code == 0, res.output
    for name in ("gateway.toml", "mqtt-password"):
        assert _mode(out / name)[0] == 0o600, name
    assert "sudo install -o root -g firegate -m 0640" in res.output
    assert f"{out / 'mqtt-password'}" in res.output.split("sudo install")[1]


def test_a_symlink_planted_at_a_secret_is_refused_not_followed(tmp_path: Path,
                                                                site: Path) -> None:
    out, victim = tmp_path / "pi", tmp_path / "victim"
    out.mkdir()
    (out / "mqtt-password").symlink_to(victim)  # dangling: the directory looks unprovisioned
    res = _cli("--site", str(site), "--kind", "agent", "--out", str(out), "--group", "0")
    assert res.exit_code == 1, res.output
    assert "cannot write" in res.output and "symbolic link" in res.output
    assert not victim.exists()
    # pointing at an existing file, with --force
    victim.write_text("precious\n")
    res = _cli("--site", str(site), "--kind", "agent", "--out", str(out), "--group", "0",
               "--force")
    assert res.exit_code == 1 and "symbolic link" in res.output, res.output
    assert victim.read_text() == "precious\n" and _mode(victim)[0] != 0o640


def test_write_file_replaces_a_hard_link_and_an_old_file_never_writing_through(
        tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "mqtt-password"
    os.link(victim, target)
    write_file(target, b"secret\n", 0o640)
    assert victim.read_text() == "precious\n"
    assert target.read_text() == "secret\n" and _mode(target)[0] == 0o640
    assert target.stat().st_ino != victim.stat().st_ino
    old = tmp_path / "gateway.toml"  # an earlier provisioning left it world-readable
    old.write_text("old")
    old.chmod(0o644)
    write_file(old, b"new", 0o600)
    assert old.read_text() == "new" and _mode(old)[0] == 0o600
    with pytest.raises(OSError):
        write_file(tmp_path / "missing-dir" / "x", b"", 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.toml", "mqtt-password",
                                                         "victim"]


def _exec_start_pre(config: Path) -> list[str]:
    """The unit's ExecStartPre with the installed entry point replaced by this interpreter
    and /etc/firegate/gateway.toml by ``config``."""
    (line,) = [ln for ln in UNIT_FILE.read_text().splitlines()
               if ln.startswith("ExecStartPre=")]
    argv = shlex.split(line.removeprefix("ExecStartPre="))
    assert argv[:2] == ["/usr/local/bin/firegate", "check-config"], argv
    assert argv[2] == "/etc/firegate/gateway.toml"
    return [sys.executable, "-m", "firegate", "check-config", str(config)]


def _as(uid: int, gid: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                           *argv], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False, env={"PATH": os.environ.get("PATH", ""),
                                            "HOME": "/nonexistent"})


@AS_ROOT
def test_the_units_exec_start_pre_reads_the_config_as_the_service_user(
        shared_dir: Path, site: Path) -> None:
    """The unit's ``User=firegate`` check-config passes on files provisioned for the group;
    a user outside the group cannot read the secrets (and so, before the fix, neither could
    the service user: they were 0600 root)."""
    unit = UNIT_FILE.read_text()
    assert "\nUser=firegate\n" in unit and "\nGroup=firegate\n" in unit
    out = shared_dir / "etc-firegate"
    site_copy = shared_dir / "site.toml"  # its ca_file is copied next to the config anyway
    site_copy.write_text(site.read_text(), "utf-8")
    res = _cli("--site", str(site_copy), "--kind", "agent", "--out", str(out), "--group",
               str(SERVICE_GID), "--gateway-id", "pump-room-1")
    assert res.exit_code == 0, res.output
    config = out / "gateway.toml"
    ok = _as(SERVICE_UID, SERVICE_GID, _exec_start_pre(config))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: gateway pump-room-1" in ok.stdout
    denied = _as(SERVICE_UID, OTHER_GID, _exec_start_pre(config))
    assert denied.returncode != 0
    assert "not readable" in denied.stderr or "Permission denied" in denied.stderr
    # the secret itself, byte for byte, only to the group
    assert _as(SERVICE_UID, SERVICE_GID, ["cat", str(out / "mqtt-password")]).returncode == 0
    assert _as(SERVICE_UID, OTHER_GID, ["cat", str(out / "mqtt-password")]).returncode != 0
    # the files as they were (0600 root:root): the service user is locked out
    (out / "mqtt-password").chmod(0o600)
    os.chown(out / "mqtt-password", 0, 0)
    old = _as(SERVICE_UID, SERVICE_GID, _exec_start_pre(config))
    assert old.returncode == 2, old.stdout + old.stderr
    assert "mqtt-password" in old.stderr and "Permission denied" in old.stderr


def test_a_collector_gets_its_own_user(tmp_path: Path, site: Path) -> None:
    out = tmp_path / "collector"
    res = _cli("--site", str(site), "--kind", "collector", "--collector-id", "c-2", "--out",
               str(out))
    assert res.exit_code == 0, res.output
    user = "firegate-collector-c-2"  # the collector's default client id for [collector] id
    assert (out / "mosquitto.passwd").read_text().startswith(f"{user}:$7$101$")
    assert (out / "mosquitto.acl").read_text().splitlines() == [
        f"user {user}", "topic read firegate/v1/#", "topic write firegate/v1/+/cmd",
        "topic write firegate/v1/+/stored"]
    assert _mode(out / "mqtt-password")[0] == 0o600
    assert len((out / "mqtt-password").read_text().strip()) == 32
    assert f'username = "{user}"' in res.output
    assert not (out / "gateway.toml").exists() and not (out / "config.json").exists()
    again = _cli("--site", str(site), "--kind", "collector", "--collector-id", "c-2", "--out",
                 str(out))
    assert again.exit_code == 2 and "already holds" in again.output
    bad = _cli("--site", str(site), "--kind", "agent", "--collector-id", "c-2")
    assert bad.exit_code == 2 and "only for --kind collector" in bad.output


def test_no_gateway_can_be_given_a_collectors_user_name(site: Path) -> None:
    from common.config import ConfigError

    with pytest.raises(ConfigError, match="reserved for collectors"):
        new_credentials(load_site(site), "firegate-collector-collector-1")
