"""Text from the field on a technician's screen (issue 14, part 6): the rule of
:mod:`firegate.textsafe`, ``firegate decode`` and ``firegate diag serial`` on frames whose
description carries markup and terminal control, and the demo's live view.

``collector status|query`` and ``status|events|sensors`` have theirs next to their other tests
(tests/collector/test_hostile_text_cli.py, tests/edge/test_local_cli_hostile.py).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from firegate.cli.diag_serial import register as register_diag_serial
from firegate.demo.display import Display, Header
from firegate.demo.watch import FeedItem, Reading, View
from firegate.textsafe import escaped, safe_text, visible
from protocols.gb26875 import (
    ApplicationData,
    ComponentAddress,
    ComponentState,
    ComponentStatus,
    FacilityConfig,
    Frame,
    TimeLabel,
    encode_adu,
    encode_frame,
)
from tests.hostile_text import HOSTILE, HOSTILE_SHOWN, HOSTILE_SOURCE, assert_shown, clean_env
from tests.infra.simproc import WAIT
from tests.test_cli_decode import FIREGATE

# -- the rule -------------------------------------------------------------------------------------


def test_every_c0_c1_and_del_is_replaced_and_nothing_else_is() -> None:
    for code in range(0x20):
        assert visible(chr(code)) == chr(0x2400 + code)
    assert visible("\x1b[2J\x07\n\t\x00") == "␛[2J␇␊␉␀"
    assert visible("\x7f") == "␡"
    for code in range(0x80, 0xA0):
        assert visible(chr(code)) == f"\\x{code:02x}"
    assert visible("a\u202eb\u2028c\u2066") == "a\\u202eb\\u2028c\\u2066"
    # Printable text, Chinese, the ideographic space, the control pictures themselves: as is.
    plain = "3F 东侧走廊\u3000感烟 [bold] \\x1b ␛ 0.32 MPa °C é € 𠀀"
    assert visible(plain) == plain
    assert visible(42) == "42"
    shown = visible("".join(map(chr, range(0x100))))
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown)


def test_markup_is_escaped_with_rich_and_prints_as_written() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False)
    tail = escaped("ends with a backslash\\")  # rich's escape keeps it from escaping "["
    console.print(f"[bold]{escaped(HOSTILE)}[/] and [red]{tail}[/]")
    console.print(safe_text(HOSTILE, style="bold"))
    assert out.getvalue() == f"{HOSTILE_SHOWN} and ends with a backslash\\\n{HOSTILE_SHOWN}\n"
    assert escaped("[/x]") == "\\[/x]"


# -- firegate decode ------------------------------------------------------------------------------

# 29 bytes of GB 18030 (the field holds 31): markup, ESC [2J, BEL and C1 0x9B (4 bytes).
PANEL_DESC = "[/x]三层[bold]东\x1b[2J\x07走廊\x9b"
PANEL_SHOWN = "[/x]三层[bold]东␛[2J␇走廊\\x9b"
T = TimeLabel(30, 15, 9, 21, 11, 26)


def _frames() -> bytes:
    smoke = ComponentStatus(1, 1, 42, ComponentAddress.from_int(0x102),
                            ComponentState.NORMAL | ComponentState.FIRE_ALARM, PANEL_DESC, T)
    config = FacilityConfig(1, 1, HOSTILE, T)  # length byte + text: the whole hostile string
    return b"".join(encode_frame(Frame(serial, 2, encode_adu(ApplicationData(mark, (obj,))),
                                       time=T))
                    for serial, mark, obj in ((1, 2, smoke), (2, 6, config)))


def _firegate(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    return subprocess.run([FIREGATE, *args], capture_output=True, text=True, timeout=60,
                          check=False, env={**env, "COLUMNS": "400"})


def test_decode_shows_markup_and_controls_of_a_description_as_text() -> None:
    r = _firegate("decode", _frames().hex(" "))
    assert r.returncode == 0, r.stderr
    assert_shown(r.stdout, PANEL_SHOWN, HOSTILE_SHOWN, "fire_alarm", "2 frame(s), 0 error(s)")


def test_decode_json_keeps_the_exact_description() -> None:
    r = _firegate("decode", "--json", _frames().hex())
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout  # JSON writes it \u001b, which reads back exactly
    items = json.loads(r.stdout)["items"]
    assert [i["adu"]["objects"][0]["description"] for i in items] == [PANEL_DESC, HOSTILE]


# -- firegate diag serial -------------------------------------------------------------------------


@contextmanager
def uitd(data: bytes) -> Iterator[str]:
    """A TCP listener that plays a UITD: sends ``data`` to the first client, then waits for it
    to hang up. Yields HOST:PORT."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(WAIT)

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:  # closed without a client: the test failed before connecting
            return
        with conn:
            conn.settimeout(WAIT)
            conn.sendall(data)
            try:
                while conn.recv(1024):
                    pass
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        thread.join(WAIT)


@pytest.mark.parametrize("verbose", [[], ["--verbose"]])
def test_diag_serial_shows_markup_and_controls_of_a_description_as_text(
        verbose: list[str]) -> None:
    app = typer.Typer()
    app.callback()(lambda: None)
    register_diag_serial(app)
    with uitd(_frames()) as address:
        result = CliRunner().invoke(app, ["serial", "--tcp", address, "--frames", "2",
                                          "--duration", str(WAIT), *verbose], env=clean_env())
    assert result.exit_code == 0, result.output
    assert_shown(result.output, PANEL_SHOWN, HOSTILE_SHOWN, "frames 2")


# -- the demo's live view -------------------------------------------------------------------------


def _view() -> tuple[View, FeedItem]:
    view = View(colour="red", reasons=[f"fire_alarm: gw-1 {HOSTILE_SOURCE} {HOSTILE}"],
                gateway_state="offline", gateway_reason=HOSTILE, links={HOSTILE: "down"},
                collector={"records_stored": 1, "sink_error": HOSTILE})
    item = FeedItem(1_718_000_000_000, 1, "fire_alarm", True, 0, HOSTILE_SOURCE, HOSTILE,
                    HOSTILE, None, None)
    view.feed.append(item)
    view.readings[(HOSTILE_SOURCE, "analog")] = Reading(HOSTILE_SOURCE, HOSTILE, "analog", 1.0,
                                                        "[/u]\x1b[5m", 1_718_000_000_000)
    return view, item


def test_demo_view_shows_markup_and_controls_as_text() -> None:
    header = Header(site="site-a", gateway="gw-1", broker="mqtt://127.0.0.1:1883",
                    store="store.sqlite3", parts="panel, modbus", period=60.0)
    view, item = _view()
    out = io.StringIO()
    console = Console(file=out, width=400, highlight=False)
    with Display(console, header) as display:
        assert not display.live
        display.update(view, [item], 1.0)  # the plain lines printed off a terminal
        lines = out.getvalue()
        console.print(display.render(view, 1.0))  # the view redrawn on a terminal
    view_text = out.getvalue()[len(lines):]
    assert_shown(lines, f"{HOSTILE_SHOWN} ({HOSTILE_SOURCE})  {HOSTILE_SHOWN}")
    assert_shown(view_text, HOSTILE_SOURCE, "[/u]␛[5m")
    # reason, gateway reason, link, store error, feed (description, detail), sensor
    assert view_text.count(HOSTILE_SHOWN) == 7, view_text


def test_demo_error_quoting_a_scenario_value_shows_it_as_text(tmp_path: Path) -> None:
    bad = tmp_path / "story.toml"
    bad.write_text('[panel]\n[[panel.events]]\nat = 5\naction = "[/x]fire"\n', encoding="utf-8")
    work = tmp_path / "work"
    r = _firegate("demo", "--scenario", str(bad), "--workdir", str(work))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "panel.events[0].action: must be one of" in r.stdout and "[/x]fire" in r.stdout
    assert not work.exists()
