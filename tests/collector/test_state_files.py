"""The collector's state directory and every file in it are owner-only (docs/collector.md,
"State files"): a fresh start makes them so, a start over an older, looser install tightens
them, and a symlink planted in a state file's place is refused, not followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from collector.app import Collector
from collector.config import CollectorConfig
from tests.collector.conftest import config_data, write_config
from tests.infra.mosquitto import Mosquitto

SECRET = "s" * 40
STATE_DBS = ("registry.sqlite", "ledger.sqlite", "notify.sqlite", "deadletters.sqlite",
             "alarms.sqlite")


def _config(tmp_path: Path, mosquitto: Mosquitto) -> CollectorConfig:
    return write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto,
        webhook=[{"url": "http://127.0.0.1:9/hook", "secret": SECRET}]))


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _loose(state: Path) -> list[str]:
    """Everything in ``state`` (and itself) that anyone but the owner can use."""
    found = [] if _mode(state) == 0o700 else [f"{state}: {oct(_mode(state))}"]
    for p in sorted(state.rglob("*")):
        allowed = 0o700 if p.is_dir() else 0o600
        if _mode(p) & ~allowed:
            found.append(f"{p.name}: {oct(_mode(p))}")
    return found


def test_a_fresh_collector_keeps_its_state_owner_only(tmp_path: Path,
                                                      mosquitto: Mosquitto) -> None:
    old = os.umask(0o022)  # the usual installer's umask: files 0644 unless made otherwise
    try:
        c = Collector(_config(tmp_path, mosquitto))
        try:
            state = tmp_path / "state"
            names = {p.name for p in state.iterdir()}
            for db in (*STATE_DBS, "store.sqlite3", "collector.lock"):
                assert db in names, sorted(names)
            assert _loose(state) == []
        finally:
            c.close()
    finally:
        os.umask(old)


def test_an_older_looser_install_is_tightened_at_start(tmp_path: Path,
                                                       mosquitto: Mosquitto) -> None:
    cfg = _config(tmp_path, mosquitto)
    Collector(cfg).close()
    state = tmp_path / "state"
    for p in [state, *state.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)  # what the version before wrote
    assert _loose(state)  # the test can fail
    Collector(cfg).close()
    assert _loose(state) == []


def test_a_symlink_planted_as_a_state_file_is_refused(tmp_path: Path,
                                                      mosquitto: Mosquitto) -> None:
    state = tmp_path / "state"
    state.mkdir()
    target = tmp_path / "elsewhere.sqlite"
    (state / "registry.sqlite").symlink_to(target)
    with pytest.raises(OSError):
        Collector(_config(tmp_path, mosquitto))
    assert not target.exists()
