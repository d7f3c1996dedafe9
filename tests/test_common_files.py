"""common.files: owner-only state files and directories, made so before anything is written,
tightened when an older version left them looser, a planted symlink refused."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from common.files import private_dir, private_file


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_a_new_file_and_its_directory_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = tmp_path / "a" / "b" / "x.sqlite"
        private_file(db)
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (v)")
        conn.execute("INSERT INTO t VALUES ('secret')")
        conn.commit()
        assert _mode(db) == 0o600 and _mode(db.parent) == 0o700
        for side in ("-wal", "-shm"):  # SQLite gives them the database file's mode
            assert _mode(db.with_name(db.name + side)) == 0o600
        conn.close()
    finally:
        os.umask(old)


def test_looser_files_and_directories_are_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    db = state / "x.sqlite"
    db.write_bytes(b"")
    db.chmod(0o644)
    wal = state / "x.sqlite-wal"
    wal.write_bytes(b"")
    wal.chmod(0o666)
    private_dir(state)
    private_file(db)
    assert (_mode(state), _mode(db), _mode(wal)) == (0o700, 0o600, 0o600)


def test_a_symlink_in_a_files_place_is_refused_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    (tmp_path / "x.sqlite").symlink_to(target)
    with pytest.raises(OSError):
        private_file(tmp_path / "x.sqlite")
    assert not target.exists()


def test_a_directory_in_a_files_place_or_a_file_in_a_directorys_is_refused(
        tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        private_file(tmp_path / "d")
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(OSError):
        private_dir(tmp_path / "f")
