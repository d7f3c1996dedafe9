"""Owner-only state files and directories (standard library only).

A process's state directory holds what outsiders must not read: webhook bodies, gateway ids,
names and notes, sometimes secrets inside notifications. :func:`private_dir` makes the
directory 0700 and :func:`private_file` makes a file 0600 *before* anything is written into
it (SQLite then opens the existing empty file and keeps its mode; its ``-wal`` and ``-shm``
side files take the mode of the database file). Both tighten what an older version left
looser, so an upgrade closes the hole at the next start instead of only for new installs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_file"]

FILE_MODE = 0o600
DIR_MODE = 0o700
SIDE_FILES = ("-wal", "-shm", "-journal")
"""SQLite's companions of a database file, tightened with it."""


def private_dir(path: Path) -> None:
    """Make sure ``path`` is a directory only its owner can enter: created 0700 (parents
    too), an existing one tightened to 0700. The path is the installer's own setting, so a
    symlink to a directory (state on another disk) is followed and its target tightened;
    the files inside are still opened with ``O_NOFOLLOW`` by :func:`private_file`."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(f"{path} is not a directory")
    if stat.S_IMODE(st.st_mode) & ~DIR_MODE:
        os.chmod(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Make sure ``path`` is a regular file readable by its owner only, before SQLite (or
    anything else) opens it: created 0600 (``O_NOFOLLOW``: a symlink planted in its place is
    refused, not followed), an existing file with a looser mode tightened (one written by an
    older version), and so are its SQLite side files. Its directory, when created here, is
    0700. OSError when it cannot be made so."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if stat.S_IMODE(st.st_mode) & ~FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    for extra in SIDE_FILES:  # left by an older version with its looser mode
        side = path.with_name(path.name + extra)
        if side.exists() and not side.is_symlink() and \
                stat.S_IMODE(side.stat().st_mode) & ~FILE_MODE:
            side.chmod(FILE_MODE)
