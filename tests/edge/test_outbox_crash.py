"""Crash safety with real processes: a child appends and deletes in a loop (``ack``, or
``mark_sent`` then ``confirm``) and is killed with SIGKILL at random moments (sometimes
while still opening the database).

After every kill: the database passes ``PRAGMA integrity_check``; every seq the child
reported as appended is present unless it was (possibly) acknowledged; nothing reported
as acknowledged came back; and seqs keep increasing across restarts - never reused.

``kill -9`` proves the process side (no state in memory is needed). Power loss is the
same argument one level down: synchronous=FULL fsyncs the WAL before a commit returns
(see edge/outbox/schema.py); simulating a power cut needs a block-device layer this test
machine does not give us.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from edge.outbox import Outbox

from .helpers import config, measurement

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 24
MIN_ROUNDS = 20  # on a slow (shared) machine, stop after these once the budget is spent
BUDGET_S = 45


def run_and_kill(db: Path, seed: int, rng: random.Random) -> list[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.edge.crash_child", str(db), str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    if seed % 6 == 0:
        time.sleep(rng.uniform(0.0, 0.4))  # during start-up: imports, open, schema
    else:
        first = child.stdout.readline()
        assert first == b"ready \n", first
        time.sleep(rng.uniform(0.02, 0.5))
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL
    # A line cut by the kill has no newline: it was never completely reported.
    return [line for line in out.decode().split("\n")[:-1] if line]


def read_db(db: Path) -> tuple[set[int], int, str]:
    with sqlite3.connect(db) as c:
        check = c.execute("PRAGMA integrity_check").fetchone()[0]
        seqs = {s for (s,) in c.execute("SELECT seq FROM outbox")}
        row = c.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
    return seqs, (row[0] if row else 1), check


def read_meta(db: Path) -> dict[str, int]:
    """The persisted counters (evictions by class, next seq): says whether a loss was a
    counted eviction or a real one."""
    with sqlite3.connect(db) as c:
        return dict(c.execute("SELECT key, value FROM meta").fetchall())


async def test_kill_9_at_random_moments(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    rng = random.Random(20261121)
    appended: set[int] = set()
    maybe_deleted: set[int] = set()
    deleted: set[int] = set()
    highest = 0
    deadline = time.monotonic() + BUDGET_S
    rounds = 0
    for seed in range(ROUNDS):
        if seed >= MIN_ROUNDS and time.monotonic() > deadline:
            break
        rounds += 1
        lines = run_and_kill(db, seed, rng)
        round_appended: list[int] = []
        for line in lines:
            tag, *numbers = line.split()
            seqs = [int(n) for n in numbers]
            if tag == "A":
                round_appended += seqs
            elif tag == "P":
                maybe_deleted.update(seqs)
            elif tag == "D":
                deleted.update(seqs)
        if round_appended:
            assert min(round_appended) > highest, f"round {seed}: a seq was reused"
            assert len(set(round_appended)) == len(round_appended)
            highest = max(round_appended)
        appended.update(round_appended)

        present, next_seq, check = read_db(db) if db.exists() else (set(), 1, "ok")
        assert check == "ok", f"round {seed}: {check}"
        lost = appended - maybe_deleted - deleted - present
        assert not lost, (f"round {seed}: committed records lost: {sorted(lost)[:10]}; "
                          f"meta: {read_meta(db)}")
        assert not (present & deleted), f"round {seed}: acknowledged records came back"
        assert next_seq > highest and all(s < next_seq for s in present)
    assert rounds >= MIN_ROUNDS
    assert len(appended) > 1000 and len(deleted) > 100  # the rounds did real work

    async with Outbox(config(tmp_path)) as ob:
        assert ob.last_seq >= highest
        # What the child had marked sent is pending again: it goes out after a restart.
        s = await ob.stats()
        assert s.sent_unconfirmed == 0 and s.pending == s.total_depth == len(present)
        (r,) = await ob.append([measurement()])
        assert r.seq > highest
