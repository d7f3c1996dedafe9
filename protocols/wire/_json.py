"""JSON plumbing shared by the codecs: one encoder, one strict parse, key checks.

The format is plain JSON because the MicroPython firmware must produce it with the ``json``
module on an ESP32 with ~100 KB of heap: no schema compiler, no binary framing. The decoder
accepts any whitespace and key order (MicroPython's ``json.dumps`` writes ``", "`` and
``": "`` and orders keys by its own hash), so only the encoder's output is canonical.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import WireError, WireErrorReason

VERSION = 1

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class _NonFinite:
    """Stands in for ``NaN``/``Infinity`` in a second parse so the error can name its path."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _NonFiniteFound(Exception):
    pass


def _refuse_constant(literal: str) -> object:
    raise _NonFiniteFound(literal)


# Python's json accepts NaN, Infinity and -Infinity by default (RFC 8259 §6 does not). The
# fast decoder stops at the first one; only then a second parse with stand-ins finds where.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_LOCATING_DECODER = json.JSONDecoder(parse_constant=_NonFinite)


def dumps(obj: object) -> bytes:
    """Compact UTF-8 JSON with real (not ``\\u``-escaped) Chinese; refuses NaN."""
    return _ENCODER.encode(obj).encode("utf-8")


def dumps_str(obj: object) -> str:
    return _ENCODER.encode(obj)


def parse(payload: bytes, max_bytes: int) -> dict[str, Any]:
    """Bytes to a v1 JSON object, or :class:`WireError`. Size is checked before any work."""
    if len(payload) > max_bytes:
        raise WireError(WireErrorReason.TOO_LARGE, "", f"{len(payload)} bytes > {max_bytes}")
    try:
        # Decode explicitly: json.loads(bytes) would also accept UTF-16 and UTF-32.
        text = str(payload, "utf-8")
    except UnicodeDecodeError as e:
        raise WireError(WireErrorReason.NOT_UTF8, "", f"invalid UTF-8 at byte {e.start}") from None
    try:
        obj = _loads(_DECODER, text)
    except _NonFiniteFound as e:
        # Parse again with stand-ins to name the path; this also reports a syntax error
        # that follows the NaN, which the first parse never reached.
        path, literal = _find_non_finite(_loads(_LOCATING_DECODER, text)) or ("", str(e))
        raise WireError(
            WireErrorReason.NOT_FINITE, path, f"{literal} is not a JSON number"
        ) from None
    if obj.__class__ is not dict:
        raise WireError(WireErrorReason.NOT_OBJECT, "", f"top level is {type(obj).__name__}")
    try:
        v = obj["v"]
    except KeyError:
        raise WireError(WireErrorReason.MISSING_FIELD, "v", "no protocol version") from None
    if v.__class__ is not int:
        raise WireError(WireErrorReason.BAD_TYPE, "v", "the version is an integer")
    if v != VERSION:
        raise WireError(WireErrorReason.UNSUPPORTED_VERSION, "v", f"v{v}; this decoder reads v1")
    return obj


def _loads(decoder: json.JSONDecoder, text: str) -> Any:
    try:
        return decoder.decode(text)
    except json.JSONDecodeError as e:
        raise WireError(WireErrorReason.NOT_JSON, "", f"{e.msg} at char {e.pos}") from None
    except (ValueError, RecursionError) as e:
        # Integers beyond sys.get_int_max_str_digits(), nesting deeper than the C stack.
        raise WireError(WireErrorReason.NOT_JSON, "", type(e).__name__) from None


def _find_non_finite(obj: object) -> tuple[str, str] | None:
    # Iterative: the C parser allows nesting close to the recursion limit, so recursing
    # here could overflow where parsing did not.
    stack: list[tuple[str, object]] = [("", obj)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _NonFinite):
            return path, node.literal
        if isinstance(node, dict):
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(node))))
    return None


def check_keys(obj: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    """Refuse keys v1 does not define; ``x_*`` keys are extensions and pass (ignored)."""
    if obj.keys() <= allowed:  # one C-level subset test on the hot path
        return
    for key in obj:
        if key not in allowed and not key.startswith("x_"):
            where = f"{path}.{key}" if path else key
            raise WireError(WireErrorReason.UNKNOWN_FIELD, where, f"v1 defines {sorted(allowed)}")


def required(obj: dict[str, Any], key: str, path: str) -> Any:
    """``obj[key]``: absent is MISSING_FIELD, ``null`` is BAD_TYPE (null only stands for
    "absent" in optional fields)."""
    try:
        value = obj[key]
    except KeyError:
        raise missing(path, key) from None
    if value is None:
        raise WireError(WireErrorReason.BAD_TYPE, join(path, key), "required, got null")
    return value


def missing(path: str, key: str) -> WireError:
    return WireError(WireErrorReason.MISSING_FIELD, join(path, key), "required")


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
