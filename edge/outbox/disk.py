"""The files that keep room on disk for the outbox: the reserve file and the file-size pin.

State and file operations only; *when* to use them (on SQLITE_FULL, at maintenance) is
decided in :mod:`edge.outbox.space`, which also logs what happened. The pin runs SQL on a
connection the caller hands in, already serialized with the other users of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

import aiosqlite

__all__ = ["DiskGuard", "file_bytes"]


class DiskGuard:
    """The reserve file (``<db>.reserve``) and the file-size pin (``max_page_count``)."""

    def __init__(self, db_path: Path, reserve_bytes: int, wal_bytes: int) -> None:
        self.path = Path(f"{db_path}.reserve")
        self.size = reserve_bytes
        # Free space wanted before growing again: the reserve plus two WAL cycles.
        self.headroom = reserve_bytes + 2 * wal_bytes
        self.reserve_ok = reserve_bytes == 0
        self.pinned = False
        self._max_pages = 0  # the page limit to restore when unpinning

    async def ensure_reserve(self) -> bool:
        if self.size:
            self.reserve_ok = await asyncio.to_thread(_allocate, self.path, self.size)
        return self.reserve_ok

    def release_reserve(self) -> bool:
        """Free the reserve; True if that freed anything."""
        if not self.size:
            return False
        self.reserve_ok = False
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True

    async def pin(self, db: aiosqlite.Connection) -> bool:
        """Hold the database at its current page count; True if it was not pinned yet."""
        if self.pinned:
            return False
        pages = await _pragma_int(db, "page_count")
        limit = await _pragma_int(db, "max_page_count")
        await db.execute(f"PRAGMA max_page_count={pages}")
        self._max_pages = limit
        self.pinned = True
        return True

    async def room_again(self) -> bool:
        """Whether the disk has room again (the reserve plus two WAL cycles free), with the
        reserve re-created if it was missing; False as well when nothing needs lifting."""
        if self.reserve_ok and not self.pinned:
            return False
        free = shutil.disk_usage(self.path.parent).free
        return free >= self.headroom and await self.ensure_reserve()

    async def unpin(self, db: aiosqlite.Connection) -> None:
        """Restore the page limit the database had before :meth:`pin`."""
        await db.execute(f"PRAGMA max_page_count={self._max_pages}")
        self.pinned = False


async def _pragma_int(db: aiosqlite.Connection, name: str) -> int:
    async with db.execute(f"PRAGMA {name}") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


def _allocate(path: Path, size: int) -> bool:
    """``posix_fallocate`` really allocates the blocks (a sparse file would free nothing
    when deleted). Blocking: runs in a thread."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_blocks * 512 >= size:
            return True
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return False
    return True


def file_bytes(db_path: Path) -> int:
    """Database plus WAL on disk."""
    total = 0
    for p in (db_path, Path(f"{db_path}-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size
    return total
