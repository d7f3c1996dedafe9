"""``firegate collector alarms``: list and show read the book (also beside a running
collector, read-only); ack and resolve write it only while the collector is stopped."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from firegate.cli.collector import build
from protocols.wire import Bus, EventType, Source

from .helpers import SMOKE, Clock, Sent, book, sig


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build(), ["alarms", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture
def config(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    b = book(state, Clock(), Sent(), policies=())
    hostile = Source("panel/1-1/42-0x00000009", Bus.GB26875, description="evil\x1b[31m\u202e")
    b.apply([sig(SMOKE, EventType.FIRE_ALARM, 1), sig(hostile, EventType.FAULT, 2)])
    b.close()
    path = tmp_path / "c.toml"
    path.write_text(f'[collector]\nstate_dir = "{state}"\n[metrics]\nlisten = ""\n')
    return path


def test_list_and_show(config: Path) -> None:
    code, out = run("list", "-c", str(config), "--json")
    assert code == 0, out
    alarms = json.loads(out)
    assert {a["type"] for a in alarms} == {"fire_alarm", "fault"}
    fault = next(a for a in alarms if a["type"] == "fault")
    assert fault["description"] == "evil\x1b[31m\u202e"  # exact in JSON
    code, out = run("list", "-c", str(config))
    assert code == 0 and "evil\u241b[31m\\u202e" in out and "\x1b" not in out
    assert "NOT ACKNOWLEDGED" in out
    code, out = run("show", "-c", str(config), fault["id"])
    assert code == 0 and "timeline:" in out and "raised" in out
    code, out = run("show", "-c", str(config), "a0000000000000000")
    assert code == 1 and "no alarm" in out
    code, out = run("list", "-c", str(config), "--state", "burning")
    assert code == 2 and "state must be one of" in out


def test_ack_and_resolve_while_stopped(config: Path) -> None:
    [fire] = [a for a in json.loads(run("list", "-c", str(config), "--json")[1])
              if a["type"] == "fire_alarm"]
    code, out = run("ack", "-c", str(config), fire["id"], "--by", "li.wei", "--note", "seen")
    assert code == 0 and "acknowledged by li.wei" in out, out
    code, out = run("ack", "-c", str(config), fire["id"], "--by", "li.wei")
    assert code == 1 and "acknowledged already" in out
    code, out = run("resolve", "-c", str(config), fire["id"], "--verdict", "maybe", "--by", "x")
    assert code == 1 and "verdict must be one of" in out
    code, out = run("resolve", "-c", str(config), fire["id"], "--verdict", "false",
                    "--by", "li.wei", "--note", "steam")
    assert code == 0 and "resolved as false" in out
    shown = json.loads(run("show", "-c", str(config), fire["id"], "--json")[1])
    assert shown["alarm"]["resolution"] == "false" and not shown["alarm"]["open"]
    assert [e["what"] for e in shown["timeline"]][-2:] == ["acknowledged", "resolved"]


def test_ack_is_refused_while_the_collector_runs(config: Path, tmp_path: Path) -> None:
    [a, _] = json.loads(run("list", "-c", str(config), "--json")[1])
    lock = (tmp_path / "state" / "collector.lock").open("a+")
    lock.write("pid 4242\n")
    lock.flush()
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running collector holds
    try:
        code, out = run("ack", "-c", str(config), a["id"], "--by", "x")
        assert code == 1 and "the collector is running (pid 4242)" in out
        code, out = run("list", "-c", str(config))  # reading is fine meanwhile
        assert code == 0 and a["id"] in out
    finally:
        lock.close()
    assert run("ack", "-c", str(config), a["id"], "--by", "x")[0] == 0
