"""The alarm book against hostile text and a careless installer: text from the field and from
people reaches the terminal only made visible (firegate/textsafe.py) and stays exact in the
book and in ``--json``; the book's file (names, notes, audit: personal data) is owner-only,
and so is the upstream queue's."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from collector.alarms.store import AlarmStore
from collector.uitd.config import UpstreamConfig
from collector.uitd.upstream_queue import FILE_NAME, UpstreamQueue
from firegate.cli.collector import build
from protocols.wire import Bus, EventType, Source

from .helpers import Clock, Sent, book, sig

HOSTILE = "3F\u2028east\u2029\x85\u2066[/x]\u2069\x1b[2J\x07"
"""A line and a paragraph separator, NEL (C1), an isolate, rich markup, ESC clear-screen, BEL."""
RAW = ("\u2028", "\u2029", "\x85", "\u2066", "\u2069", "\x1b", "\x07")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build(), ["alarms", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    b = book(state, Clock(), Sent(), policies=())
    src = Source("panel/1-1/42-0x00000009", Bus.GB26875, description=HOSTILE)
    b.apply([sig(src, EventType.FIRE_ALARM, 1)])
    b.close()
    path = tmp_path / "c.toml"
    path.write_text(f'[collector]\nstate_dir = "{state}"\n[metrics]\nlisten = ""\n')
    return path


def test_hostile_text_is_shown_visibly_and_kept_exactly(config: Path) -> None:
    [alarm] = json.loads(run("list", "-c", str(config), "--json")[1])
    assert alarm["description"].startswith(HOSTILE)  # exact in the book and in JSON
    code, out = run("ack", "-c", str(config), alarm["id"], "--by", "li\u202ewei\x1b]0;x\x07",
                    "--note", "seen\u2028twice\x1b[2J")
    assert code == 0, out
    for args in (("list", "-c", str(config), "--state", "all"),
                 ("show", "-c", str(config), alarm["id"])):
        code, out = run(*args)
        assert code == 0, out
        for ch in RAW:
            assert ch not in out, f"{ch!r} reached the terminal in {args[0]}"
        assert "\\u2028" in out and "\u241b" in out and "\\u202e" in out
    shown = json.loads(run("show", "-c", str(config), alarm["id"], "--json")[1])
    assert shown["alarm"]["acknowledged_by"] == "li\u202ewei\x1b]0;x\x07"
    assert shown["alarm"]["note"] == "seen\u2028twice\x1b[2J"


def test_the_alarm_book_is_owner_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    b = book(state, Clock(), Sent(), policies=())
    b.apply([sig(Source("panel/1-1/42-0x00000001", Bus.GB26875), EventType.FIRE_ALARM, 1)])
    try:
        for name in ("alarms.sqlite", "alarms.sqlite-wal", "alarms.sqlite-shm"):
            assert _mode(state / name) == 0o600, name
        assert _mode(state) == 0o700
    finally:
        b.close()


def test_a_loose_book_is_tightened_and_a_symlink_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose" / "alarms.sqlite"
    loose.parent.mkdir()
    AlarmStore(loose).close()
    os.chmod(loose, 0o644)  # as an older version left it
    AlarmStore(loose).close()
    assert _mode(loose) == 0o600
    target = tmp_path / "elsewhere.sqlite"
    target.write_bytes(b"")
    planted = tmp_path / "planted" / "alarms.sqlite"
    planted.parent.mkdir()
    planted.symlink_to(target)
    with pytest.raises(OSError):
        AlarmStore(planted)
    assert target.read_bytes() == b""


def test_the_upstream_queue_is_owner_only(tmp_path: Path) -> None:
    up = UpstreamConfig(name="province", host="127.0.0.1", port=1, uitd_address=1)
    q = UpstreamQueue(tmp_path / "state" / FILE_NAME, [up])
    try:
        assert _mode(tmp_path / "state" / FILE_NAME) == 0o600
    finally:
        q.close()


def test_fire_alarms_past_the_cap_fold_into_one_overflow_alarm(tmp_path: Path) -> None:
    """A hostile gateway (or a spoofed UITD) raising fire alarms from ever new sources: past
    ``max_open_fire_per_gateway`` each re-raises one overflow fire alarm; nothing unseen, the
    book bounded; other gateways unaffected."""
    from collector.alarms.book import OVERFLOW_SOURCE
    from collector.alarms.config import AlarmsConfig

    cfg = AlarmsConfig(max_open_per_gateway=2, max_open_fire_per_gateway=3)
    b = book(tmp_path, Clock(), Sent(), policies=(), config=cfg)
    try:
        srcs = [Source(f"panel/1-1/42-0x{i:08x}", Bus.GB26875, description=f"d{i}")
                for i in range(10)]
        b.apply([sig(src, EventType.FIRE_ALARM, i + 1) for i, src in enumerate(srcs)])
        opened = b.list(state="open", limit=100)
        assert len(opened) == 4
        [overflow] = [a for a in opened if a.source == OVERFLOW_SOURCE]
        assert overflow.type == "fire_alarm" and overflow.raise_count == 7
        assert "max_open_fire_per_gateway" in overflow.description
        assert b.folded == {"gw-1": 7}
        b.apply([sig(srcs[0], EventType.FIRE_ALARM, 1, gateway="gw-2")])
        assert len(b.list(state="open", limit=100)) == 5
    finally:
        b.close()


def test_retention_keeps_the_audit_of_alarms_still_kept(tmp_path: Path) -> None:
    """An acknowledged fire alarm still active after the retention: its audit entry (who
    acknowledged it, from where) stays; the audit of an alarm pruned goes with it."""
    from collector.alarms.config import AlarmsConfig
    from tests.collector.alarms.helpers import NOW

    clock = Clock()
    b = book(tmp_path, clock, Sent(), policies=(), config=AlarmsConfig(retention_days=1))
    try:
        still = Source("panel/1-1/42-0x00000001", Bus.GB26875)
        gone = Source("panel/1-1/42-0x00000002", Bus.GB26875)
        b.apply([sig(still, EventType.FIRE_ALARM, 1), sig(gone, EventType.FAULT, 2)])
        ids = {a.source: a.id for a in b.list(state="open", limit=10)}
        b.acknowledge(ids[still.id], by="li.wei", note=None, origin="10.0.0.9")
        b.acknowledge(ids[gone.id], by="li.wei", note=None, origin="10.0.0.9")
        b.apply([sig(gone, EventType.FAULT, 3, active=False)])  # acknowledged + cleared
        clock.now = NOW + 3 * 86_400_000
        assert b.prune() == 1
        kept = [e.alarm_id for e in b.audit(limit=10)]
        assert kept == [ids[still.id]]
    finally:
        b.close()
