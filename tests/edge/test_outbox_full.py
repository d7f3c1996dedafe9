"""Full disk and damaged files: typed, counted errors; measurements give way; OutboxFull
when nothing more can give way - never a silent loss.

Two real mechanisms produce SQLITE_FULL here: a 2 MiB tmpfs (a real ENOSPC from the kernel;
needs root or CAP_SYS_ADMIN to mount, skipped otherwise) and SQLite's own page limit
(``max_file_bytes``, always available).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.outbox import ErrorReason, Outbox, OutboxCorrupt, OutboxError, OutboxFull
from protocols.wire import Priority, Record, seq_ranges

from .helpers import config, event, measurement

FIRE, ALARM, EVENT, MEAS = Priority


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def fill_with_measurements(ob: Outbox, rounds: int) -> list[int]:
    """Append groups of measurements; every append must succeed (evicting older ones)."""
    seqs: list[int] = []
    for i in range(rounds):
        out = await ob.append([measurement(i * 100 + j) for j in range(100)])
        seqs += [r.seq for r in out]
    return seqs


async def fill_with_alarms(ob: Outbox) -> list[Record]:
    """Append alarms, 10 at a time then one by one, until the outbox refuses even one;
    returns what it accepted."""
    accepted: list[Record] = []
    for size in (10, 1):
        for i in range(100_000):
            try:
                accepted += await ob.append([event(ALARM, i * 10 + j) for j in range(size)])
            except OutboxFull:
                break
        else:
            raise AssertionError("the outbox never became full")
    return accepted


async def stored_seqs(ob: Outbox) -> set[int]:
    seqs: set[int] = set()
    while batch := await ob.next_batch():
        seqs |= {r.seq for r in batch}
    ob.release_all()
    return seqs


def integrity(db: Path) -> list[tuple[str]]:
    with sqlite3.connect(db) as c:
        return c.execute("PRAGMA integrity_check").fetchall()


async def check_full_disk_behaviour(ob: Outbox) -> None:
    # 1. Measurements: every append succeeds, older measurements are evicted for room.
    await fill_with_measurements(ob, 150)
    s = await ob.stats()
    assert s.errors.get(ErrorReason.FULL, 0) >= 1
    assert s.evicted[MEAS] > 0
    # 2. Alarms: measurements give way, then the outbox refuses with OutboxFull; every
    #    alarm it accepted is still there, none was evicted for another.
    accepted = await fill_with_alarms(ob)
    assert len(accepted) > 0
    s = await ob.stats()
    assert s.evicted[ALARM] == 0 and s.depth[MEAS] == 0
    present = await stored_seqs(ob)
    assert {r.seq for r in accepted} <= present
    # 3. A refused append stored nothing and consumed no seq for good.
    last = ob.last_seq
    with pytest.raises(OutboxFull):
        await ob.append([event(ALARM, 0)])
    assert ob.last_seq == last
    # 4. Once records are confirmed (by the collector's ranges) or acknowledged, there is
    #    room again.
    held = sorted(present)
    confirmed, acked = held[: len(held) // 4], held[len(held) // 4: len(held) // 2]
    assert await ob.confirm(ob.epoch, seq_ranges(confirmed)) == len(confirmed)
    assert await ob.ack(acked) == len(acked)
    (fire,) = await ob.append([event(FIRE)])
    assert fire.seq == last + 1


async def test_sqlite_page_limit(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_file_bytes=256 * 1024)
    async with Outbox(cfg) as ob:
        await check_full_disk_behaviour(ob)
    assert integrity(cfg.path) == [("ok",)]
    assert os.path.getsize(cfg.path) <= 256 * 1024


async def test_real_full_disk(small_disk: Path) -> None:
    # Scaled down from the defaults (4 MiB WAL checkpoints, 8 MiB reserve) to fit 2 MiB,
    # keeping their ratio: the reserve holds two WAL checkpoints' worth.
    cfg = config(small_disk, wal_autocheckpoint_pages=32, reserve_bytes=256 * 1024)
    async with Outbox(cfg) as ob:
        assert (await ob.stats()).reserve_ok
        await check_full_disk_behaviour(ob)
        assert not (await ob.stats()).reserve_ok  # it was used
    assert integrity(cfg.path) == [("ok",)]


async def test_the_outbox_grows_again_when_the_disk_has_room(small_disk: Path) -> None:
    # Another program's file fills half the disk, then is rotated away.
    filler = small_disk / "other-program.log"
    fd = os.open(filler, os.O_CREAT | os.O_RDWR)
    os.posix_fallocate(fd, 0, 1024 * 1024)
    os.close(fd)
    cfg = config(
        small_disk,
        wal_autocheckpoint_pages=32,
        reserve_bytes=128 * 1024,
        maintenance_interval_s=0.05,
    )
    async with Outbox(cfg) as ob:
        await fill_with_measurements(ob, 60)
        s = await ob.stats()
        assert s.disk_full and not s.reserve_ok and s.evicted[MEAS] > 0
        filler.unlink()
        for _ in range(1000):  # up to 20 s: a generous deadline, not a timing assertion
            if not (s := await ob.stats()).disk_full:
                break
            await asyncio.sleep(0.02)
        assert not s.disk_full and s.reserve_ok
        await fill_with_measurements(ob, 10)  # grows into the freed space, evicting nothing
        assert (await ob.stats()).evicted[MEAS] == s.evicted[MEAS]
    assert integrity(cfg.path) == [("ok",)]


async def test_full_disk_without_a_reserve_still_fails_typed_and_safely(small_disk: Path) -> None:
    cfg = config(small_disk, wal_autocheckpoint_pages=32, reserve_bytes=0)
    async with Outbox(cfg) as ob:
        accepted: list[int] = []
        with pytest.raises(OutboxFull):
            for i in range(10_000):
                accepted += [r.seq for r in await ob.append([event(ALARM, i)] * 20)]
        assert set(accepted) <= await stored_seqs(ob)
    assert integrity(cfg.path) == [("ok",)]


async def test_a_damaged_file_is_a_typed_error_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    db.write_bytes(b"this is not a database" * 500)
    with pytest.raises(OutboxCorrupt):
        await Outbox.open(config(tmp_path))
    assert db.read_bytes().startswith(b"this is not")


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    async with Outbox(config(tmp_path)):
        pass
    with sqlite3.connect(tmp_path / "outbox.db") as c:
        c.execute("PRAGMA user_version=99")
    # A typed refusal (docs/outbox.md, "Full disk and I/O errors"): an OutboxError counted
    # under "other", not a damaged file (OutboxCorrupt) nor some other exception.
    with pytest.raises(OutboxError, match=r"schema v99 is newer than v\d+") as refused:
        await Outbox.open(config(tmp_path))
    assert type(refused.value) is OutboxError and refused.value.reason is ErrorReason.OTHER
    with sqlite3.connect(tmp_path / "outbox.db") as c:  # refused, and left as it was
        assert c.execute("PRAGMA user_version").fetchone() == (99,)


async def test_the_full_disk_checkpoint_really_checkpoints(tmp_path: Path) -> None:
    """Step 1 of the full-disk sequence copies the WAL into the database. It used a pragma
    name SQLite does not know (``walcheckpoint``), which SQLite ignores without a word: the
    step always "failed" and the reserve was released at the first SQLITE_FULL."""
    from edge.outbox.space import checkpoint

    cfg = config(tmp_path, wal_autocheckpoint_pages=100_000)  # nothing checkpoints by itself
    async with Outbox(cfg) as ob:
        await ob.append([measurement(i) for i in range(200)])
        wal = Path(f"{cfg.path}-wal")
        assert wal.stat().st_size > 0
        assert await checkpoint(ob._core) is True
