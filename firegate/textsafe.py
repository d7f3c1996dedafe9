"""Text from the field, made safe for a technician's screen (issue 14, part 6).

Descriptions, source ids, units, gateway versions, link names and error texts come from
panels, devices and gateways: they are hostile until shown. Two things go wrong when they
reach rich as they are:

* **markup**: ``[/x]`` in a string rich parses as markup raises ``MarkupError`` (the command
  crashes) and ``[bold]`` is rendered as formatting instead of shown;
* **control characters**: ESC starts a terminal escape sequence (``ESC [2J`` clears the
  screen), BEL rings, CR and LF break a table's row; C1 0x9B is a one-byte CSI on some
  terminals.

The rule, the same in every human renderer of the command line and the demo:

* C0 controls U+0000-U+001F and DEL U+007F are shown as their Unicode control pictures
  (U+2400 + code, U+2421 for DEL): ESC is ``␛``, BEL ``␇``, LF ``␊``, TAB ``␉``. A description
  is one line, so LF and TAB are shown too. The pictures are one cell wide, so tables keep
  their columns;
* C1 controls U+0080-U+009F have no picture: they are shown as ``\\x9b``; so are the Unicode
  line and paragraph separators and the bidirectional embedding, override and isolate controls
  (``\\u2028``, ``\\u202e``...), which would move or hide the text around them;
* where the text goes into a string rich parses as markup, it also passes through
  :func:`rich.markup.escape` (:func:`escaped`); a :class:`rich.text.Text` is never parsed, so
  :func:`safe_text` only replaces the controls.

``--json`` output does not use this module: it keeps the exact text (``json.dumps`` writes
controls as ``\\u001b``, which reads back exactly).
"""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text

__all__ = ["escaped", "safe_text", "visible"]

_SHOWN: dict[int, str] = {
    **{code: chr(0x2400 + code) for code in range(0x20)},
    0x7F: "\u2421",
    **{code: f"\\x{code:02x}" for code in range(0x80, 0xA0)},
    **{code: f"\\u{code:04x}" for code in (0x2028, 0x2029, *range(0x202A, 0x202F),
                                           *range(0x2066, 0x206A))},
}


def visible(value: object) -> str:
    """``value`` as text with every control character replaced by something visible."""
    return str(value).translate(_SHOWN)


def escaped(value: object) -> str:
    """``value`` ready to be put inside a rich markup string: controls visible, markup
    escaped (``[bold]`` prints as ``[bold]``)."""
    return escape(visible(value))


def safe_text(value: object, style: str = "") -> Text:
    """``value`` as a :class:`rich.text.Text` (never parsed as markup), controls visible."""
    return Text(visible(value), style=style)
