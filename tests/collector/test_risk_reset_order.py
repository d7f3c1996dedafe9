"""A panel reset clears only what was raised at or before its own time, not by arrival order.

A panel's backlog can reach the gateway reordered (an interrupted link, a UITD's buffer), so
the gateway's seq is arrival order, not the panel's. These tests feed the risk board records
whose arrival order and panel time disagree, and check the colour follows the panel's time
(docs/collector.md, "Three-colour risk per site"); the last ones check the times survive a
restart through the registry's real SQLite file, including one written before the columns.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from collector.config import RiskRules
from collector.registry import Registry
from collector.risk import Colour, RiskBoard, compare_record_times, reset_prefix
from protocols.wire import Bus, Event, EventType, Source

T0 = 1_718_000_000_000  # gateway clock
P0 = 1_717_990_000_000  # the panel's clock: wrong by hours, as panel clocks often are
SMOKE = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")
SMOKE_2 = Source("panel/2-1/42-0x00000007", Bus.GB26875)
RESET_1 = Source("panel/1-1/system", Bus.GB26875)
GATEWAY_RESET = Source("reset", Bus.GB26875)


def ev(src: Source, kind: EventType, seq: int, *, recv_s: int, panel_s: int | None,
       active: bool = True) -> Event:
    """An event received ``recv_s`` seconds after T0, stamped ``panel_s`` by the panel."""
    return Event(source=src, type=kind, seq=seq, receive_ms=T0 + recv_s * 1000,
                 source_ms=None if panel_s is None else P0 + panel_s * 1000, active=active)


def colour(board: RiskBoard) -> Colour:
    return board.assess("s1").colour


def test_a_reset_older_than_the_fire_alarm_leaves_it_red() -> None:
    # The panel's order: reset at 10 s, fire alarm at 20 s. The gateway got them the other way
    # round (alarm seq 1, reset seq 2), as a reordered backlog.
    board = RiskBoard(RiskRules())
    assert board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 1, recv_s=30,
                                            panel_s=20))
    assert not board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 2, recv_s=31,
                                                panel_s=10))
    assert colour(board) is Colour.RED
    assert [c.kind for c in board.conditions("s1")] == ["fire_alarm"]
    # A reset the panel made after the alarm clears it.
    assert board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 3, recv_s=32,
                                            panel_s=25))
    assert colour(board) is Colour.GREEN


def test_a_reset_newer_than_the_fire_alarm_clears_it_whatever_the_arrival_order() -> None:
    board = RiskBoard(RiskRules())
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 1, recv_s=1, panel_s=5))
    assert board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 2, recv_s=2, panel_s=9))
    assert colour(board) is Colour.GREEN
    # An operation record carrying "reset" follows the same rule.
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 3, recv_s=3, panel_s=20))
    op = Event(source=RESET_1, type=EventType.OPERATION, seq=4, receive_ms=T0 + 4000,
               source_ms=P0 + 15_000, operations=("reset", "silence"))
    assert not board.apply_event("s1", "gw", op)  # 15 s < 20 s: the alarm came after
    assert colour(board) is Colour.RED
    op = Event(source=RESET_1, type=EventType.OPERATION, seq=5, receive_ms=T0 + 5000,
               source_ms=P0 + 21_000, operations=("reset",))
    assert board.apply_event("s1", "gw", op)
    assert colour(board) is Colour.GREEN


def test_the_same_panel_second_is_decided_by_arrival_on_the_safe_side() -> None:
    # GB/T 26875.3 time labels have one-second steps: a detector that alarms again in the
    # second of the reset. The record that arrived after the reset keeps the site red.
    board = RiskBoard(RiskRules())
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 7, recv_s=1, panel_s=10))
    assert not board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 6, recv_s=2,
                                                panel_s=10))
    assert colour(board) is Colour.RED
    # The same second, but the alarm arrived first: at or before the reset, cleared.
    assert board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 8, recv_s=3, panel_s=10))
    assert colour(board) is Colour.GREEN


def test_without_panel_times_the_gateway_receive_time_decides() -> None:
    board = RiskBoard(RiskRules())
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 5, recv_s=20, panel_s=None))
    # Lower receive time (a resent record of an earlier reset): not this alarm's reset.
    assert not board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 6, recv_s=10,
                                                panel_s=None))
    assert colour(board) is Colour.RED
    # Only one of the two has a panel time: no common clock with the panel, receive time.
    assert not board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 7, recv_s=15,
                                                panel_s=99))
    assert colour(board) is Colour.RED
    assert board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 8, recv_s=21,
                                            panel_s=None))
    assert colour(board) is Colour.GREEN


def test_a_repeat_while_active_moves_the_time_a_reset_is_compared_with() -> None:
    # The panel: alarm at 10 s, reset at 20 s, alarm again at 30 s. Arrival: both alarms,
    # then the reset. The second alarm is a repeat while active (no change of colour), but
    # it was raised after the reset, so the reset must not clear it.
    board = RiskBoard(RiskRules())
    assert board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 1, recv_s=1,
                                            panel_s=10))
    assert not board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 2, recv_s=2,
                                                panel_s=30))
    # A repeat with an older panel time does not move it back.
    assert not board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 3, recv_s=3,
                                                panel_s=12))
    (c,) = board.conditions("s1")
    assert (c.since_ms, c.seq) == (T0 + 1000, 1)  # the first raise is still "since"
    assert c.raised_source_ms == P0 + 30_000
    assert not board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 4, recv_s=4,
                                                panel_s=20))
    assert colour(board) is Colour.RED


def test_a_gateway_wide_reset_compares_gateway_receive_times() -> None:
    # A reset from a source without a panel prefix clears every panel of the gateway; their
    # clocks are not the reset's, so the gateway's receive time decides (panel 2-1's clock
    # says "later" but it arrived before).
    board = RiskBoard(RiskRules())
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 1, recv_s=1, panel_s=10))
    board.apply_event("s1", "gw", ev(SMOKE_2, EventType.FIRE_ALARM, 2, recv_s=2,
                                     panel_s=900_000))
    board.apply_event("s1", "gw2", ev(SMOKE, EventType.FIRE_ALARM, 3, recv_s=3, panel_s=1))
    assert board.apply_event("s1", "gw", ev(GATEWAY_RESET, EventType.RESET, 4, recv_s=5,
                                            panel_s=20))
    assert [(c.gateway_id, c.source_id) for c in board.conditions("s1")] == [
        ("gw2", SMOKE.id)]  # another gateway's panel is not reset


def test_an_older_alarm_arriving_after_a_reset_is_still_raised() -> None:
    # Nothing marks a condition as reset for records still to come: a wrong panel clock must
    # never hide a fire alarm, so a late one stays red until the next reset (the safe side).
    board = RiskBoard(RiskRules())
    board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 5, recv_s=5, panel_s=20))
    assert board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 6, recv_s=6,
                                            panel_s=10))
    assert colour(board) is Colour.RED


def test_raise_times_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    reg = Registry(path)
    board = RiskBoard(RiskRules(), reg.conditions())
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 1, recv_s=1, panel_s=10))
    board.apply_event("s1", "gw", ev(SMOKE, EventType.FIRE_ALARM, 2, recv_s=2, panel_s=30))
    reg.record_conditions(*board.take_changes())
    reg.close()
    reg = Registry(path)
    (c,) = reg.conditions()
    assert (c.since_ms, c.raised_ms, c.raised_source_ms) == (T0 + 1000, T0 + 2000, P0 + 30_000)
    again = RiskBoard(RiskRules(), reg.conditions())
    assert not again.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 3, recv_s=3,
                                                panel_s=20))
    assert colour(again) is Colour.RED
    assert again.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 4, recv_s=4, panel_s=31))
    reg.record_conditions(*again.take_changes())
    reg.close()
    assert Registry(path).conditions() == []


def test_a_registry_written_before_the_raise_times_is_upgraded(tmp_path: Path) -> None:
    # The condition table as the collector wrote it before: eight columns.
    path = tmp_path / "registry.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE condition (gateway TEXT NOT NULL, source TEXT NOT NULL, kind TEXT "
               "NOT NULL, site TEXT NOT NULL, since_ms INTEGER NOT NULL, seq INTEGER NOT NULL, "
               "colour TEXT NOT NULL, text TEXT NOT NULL, PRIMARY KEY (gateway, source, kind))")
    db.execute("INSERT INTO condition VALUES ('gw', ?, 'fire_alarm', 's1', ?, 1, 'red', '')",
               (SMOKE.id, T0 + 20_000))
    db.commit()
    db.close()
    reg = Registry(path)
    (c,) = reg.conditions()
    assert (c.raised_ms, c.raised_source_ms) == (None, None)
    board = RiskBoard(RiskRules(), reg.conditions())
    # No panel time kept: the receive time (since_ms) decides.
    assert not board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 2, recv_s=19,
                                                panel_s=5))
    assert colour(board) is Colour.RED
    assert board.apply_event("s1", "gw", ev(RESET_1, EventType.RESET, 3, recv_s=21, panel_s=6))
    reg.record_conditions(*board.take_changes())
    reg.flush()
    assert reg.conditions() == []
    reg.close()


def test_the_shared_helpers() -> None:
    # The rule other consumers of resets (the alarm book) can share.
    assert reset_prefix("panel/1-1/system") == "panel/1-1/"
    assert reset_prefix("panel/1-1/42-0x00000102") == "panel/1-1/"
    assert reset_prefix("reset") == reset_prefix("panel/1-1") == ""
    assert compare_record_times(5, 100, 9, 50, same_clock=True) > 0  # panel clock decides
    assert compare_record_times(5, 100, 9, 50, same_clock=False) < 0  # receive time decides
    assert compare_record_times(5, None, 9, 50, same_clock=True) < 0  # one side has no panel
    assert compare_record_times(9, 50, 5, 50, same_clock=True) == 0
