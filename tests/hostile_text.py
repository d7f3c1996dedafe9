"""Text from the field that tries to break a technician's screen (issue 14, part 6).

Shared by the tests of every human renderer: the command line's tables and trees and the
demo's live view must show it as text, visibly, and ``--json`` must give it back exactly.
"""

from __future__ import annotations

# Markup rich would parse (``[/x]`` closes no tag: MarkupError), ESC [2J (clear the screen),
# BEL, C1 0x9B (a one-byte CSI on some terminals) and DEL. 33 characters: fits a wire
# description (64) and, without "[/bold]" and DEL, a GB/T 26875.3 one (31 bytes of GB 18030).
HOSTILE = "[/x]三层[bold]东[/bold]\x1b[2J\x07走廊\x9b31m\x7f"
HOSTILE_SHOWN = "[/x]三层[bold]东[/bold]␛[2J␇走廊\\x9b31m␡"
"""What a human renderer prints for :data:`HOSTILE`."""

# A source id is printable ASCII without spaces (protocols/wire, check_token): markup fits.
HOSTILE_SOURCE = "panel/[/x]/[bold]42"

# Terminal control that must never reach a human renderer's output.
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\x7f")


def assert_shown(output: str, *expected: str) -> None:
    """No raw control character in ``output``, and every ``expected`` text in it."""
    for raw in RAW_CONTROLS:
        assert raw not in output, f"raw {raw!r} in the output: {output!r}"
    for text in expected:
        assert text in output, f"{text!r} not in {output!r}"


def clean_env() -> dict[str, str | None]:
    """Wide lines, and no colour forced by the environment (its ESC sequences are rich's own,
    not the field's, but would hide what the test looks for); ``None`` unsets for CliRunner."""
    return {"COLUMNS": "400", "FORCE_COLOR": None, "TTY_COMPATIBLE": None,
            "TTY_INTERACTIVE": None}
