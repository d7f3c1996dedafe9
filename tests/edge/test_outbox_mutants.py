"""edge/outbox core.py and disk.py: what mutation testing found unguarded (docs/testing.md).

``./dev mutate outbox`` showed the outbox's own tests exercising the reserve file, the
file-size pin and the error counter only through the full-disk sequence, where a wrong
return value or an off-by-one in a count changed nothing they looked at. Here each piece is
driven directly, on real files and a real SQLite connection (a real outbox's), and every
result is looked at.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from edge.outbox import ErrorReason, Outbox, OutboxError
from edge.outbox.disk import DiskGuard, file_bytes

from .helpers import config

MB = 1024 * 1024


# -- the reserve file ------------------------------------------------------------------------

async def test_the_reserve_is_a_real_allocation_of_exactly_its_size(tmp_path: Path) -> None:
    guard = DiskGuard(tmp_path / "o.db", MB, 0)
    assert guard.reserve_ok is False and guard.path == tmp_path / "o.db.reserve"
    assert await guard.ensure_reserve() is True and guard.reserve_ok is True
    st = guard.path.stat()
    assert st.st_size == MB  # from offset 0: not one byte more
    assert st.st_blocks * 512 >= MB  # allocated, not sparse: deleting it frees the room
    assert await guard.ensure_reserve() is True  # already there: kept
    assert guard.path.stat().st_size == MB


async def test_the_reserve_file_is_private_to_its_owner_and_readable(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        guard = DiskGuard(tmp_path / "o.db", 4096, 0)
        assert await guard.ensure_reserve()
    finally:
        os.umask(old)
    assert guard.path.stat().st_mode & 0o777 == 0o644


async def test_a_reserve_that_cannot_be_made_is_not_ok_and_leaves_no_file(
        tmp_path: Path) -> None:
    guard = DiskGuard(tmp_path / "missing-dir" / "o.db", MB, 0)
    assert await guard.ensure_reserve() is False and guard.reserve_ok is False
    assert not guard.path.exists()


async def test_releasing_the_reserve_says_whether_it_freed_anything(tmp_path: Path) -> None:
    none = DiskGuard(tmp_path / "n.db", 0, 0)  # no reserve configured: always ok
    assert none.reserve_ok is True
    assert none.release_reserve() is False and none.reserve_ok is True

    guard = DiskGuard(tmp_path / "o.db", MB, 0)
    assert await guard.ensure_reserve()
    assert guard.release_reserve() is True
    assert guard.reserve_ok is False and not guard.path.exists()
    assert guard.release_reserve() is False  # nothing left to free
    assert guard.reserve_ok is False


async def test_room_again_only_when_something_is_to_be_lifted(tmp_path: Path) -> None:
    guard = DiskGuard(tmp_path / "o.db", 0, 4096)  # no reserve: ok from the start
    assert guard.headroom == 2 * 4096
    assert await guard.room_again() is False  # nothing pinned, reserve fine: nothing to do
    guard.pinned = True
    assert await guard.room_again() is True  # this disk has 8 KiB free
    greedy = DiskGuard(tmp_path / "g.db", 0, 2**62)  # wants more than any disk has
    greedy.pinned = True
    assert await greedy.room_again() is False
    missing = DiskGuard(tmp_path / "r.db", MB, 0)  # reserve missing: room means re-made
    assert await missing.room_again() is True and missing.path.stat().st_size == MB


# -- the file-size pin -----------------------------------------------------------------------

async def test_the_pin_holds_the_page_count_and_unpin_restores_the_old_limit(
        tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "p.db") as db:
        await db.execute("PRAGMA max_page_count=123456")
        await db.execute("CREATE TABLE t(x)")
        await db.commit()
        pages = (await (await db.execute("PRAGMA page_count")).fetchone())[0]  # type: ignore[index]
        assert pages > 1
        guard = DiskGuard(tmp_path / "p.db", 0, 0)
        assert await guard.pin(db) is True and guard.pinned is True
        assert (await (await db.execute("PRAGMA max_page_count")).fetchone())[0] == pages  # type: ignore[index]
        assert await guard.pin(db) is False  # already pinned: the old limit is kept
        with pytest.raises(sqlite3.OperationalError, match="full"):  # the pin holds
            await db.execute("INSERT INTO t VALUES (zeroblob(100000))")
        await db.rollback()
        await guard.unpin(db)
        assert guard.pinned is False
        assert (await (await db.execute("PRAGMA max_page_count")).fetchone())[0] == 123456  # type: ignore[index]


def test_file_bytes_is_database_plus_wal(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    assert file_bytes(db) == 0  # neither file yet
    db.write_bytes(b"x" * 1000)
    assert file_bytes(db) == 1000  # no WAL file: not an error
    Path(f"{db}-wal").write_bytes(b"y" * 24)
    assert file_bytes(db) == 1024


# -- the core: errors counted one by one, a failed transaction rolled back -------------------

async def test_each_storage_error_is_counted_once_logged_and_typed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with Outbox(config(tmp_path)) as ob:
        core = ob._core
        for n in (1, 2):
            with caplog.at_level(logging.WARNING, logger="edge.outbox.core"), \
                    pytest.raises(OutboxError) as info:
                async with core.guard():
                    await core.with_connection(lambda db: db.execute("SELECT * FROM nope"))
            assert info.value.reason is ErrorReason.OTHER
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            assert core.errors == {"other": n}
        assert (await ob.stats()).errors == {"other": 2}
    warned = [r.getMessage() for r in caplog.records if r.name == "edge.outbox.core"]
    assert warned == [f"outbox {config(tmp_path).path}: no such table: nope"] * 2


async def test_a_failed_transaction_is_rolled_back_and_the_next_one_runs(
        tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)) as ob:
        core = ob._core

        async def half(db: aiosqlite.Connection, _changes: object) -> None:
            await db.execute("CREATE TABLE scratch(x)")
            await db.execute("INSERT INTO scratch VALUES (1)")
            await db.execute("INSERT INTO nope VALUES (1)")  # fails: all of it must go

        with pytest.raises(sqlite3.OperationalError, match="no such table: nope"):
            await core.transact(half)  # type: ignore[arg-type]
        assert core.conn().in_transaction is False

        async def look(db: aiosqlite.Connection, _changes: object) -> None:
            async with db.execute("SELECT name FROM sqlite_master WHERE name='scratch'") as c:
                assert await c.fetchall() == []  # the table of the failed one is gone

        await core.transact(look)  # type: ignore[arg-type]
        assert [r.seq for r in await ob.append([])] == []


async def test_a_new_outbox_is_not_disk_full_and_wants_its_documented_headroom(
        tmp_path: Path) -> None:
    cfg = config(tmp_path, reserve_bytes=MB, wal_autocheckpoint_pages=100)
    async with Outbox(cfg) as ob:
        s = await ob.stats()
        assert s.disk_full is False and s.reserve_ok is True
        # "the reserve plus two WAL cycles free" (disk.py), a WAL cycle in 4 KiB pages
        assert ob._core.disk.headroom == MB + 2 * 100 * 4096


async def test_the_connection_of_a_closed_outbox_is_refused_by_name(tmp_path: Path) -> None:
    from edge.outbox import OutboxClosed

    ob = await Outbox.open(config(tmp_path))
    await ob.close()
    with pytest.raises(OutboxClosed) as info:
        ob._core.conn()
    assert str(info.value) == "the outbox is not open"
