"""Small validators shared by the record model, the messages and the decoders.

Each check either returns (possibly normalised) or raises :class:`WireError` with the wire
path it was given. Two rules run through all of them:

* ``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds and mypy
  accepts ``seq=True``. Integer checks therefore compare ``value.__class__ is int``.
* Checks are written for the collector's hot path: the common case is one or two C-level
  operations, and the slow work of telling a wrong type from a wrong value happens only on
  the way to raising.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import NoReturn

from .errors import WireError, WireErrorReason

BAD_TYPE = WireErrorReason.BAD_TYPE
BAD_VALUE = WireErrorReason.BAD_VALUE

MAX_SAFE_INT = 2**53 - 1
"""Largest integer a JSON consumer with IEEE doubles (JavaScript, Grafana, some MicroPython
ports) holds exactly. Sequence numbers and timestamps stay below it."""

UINT8 = 0xFF
UINT16 = 0xFFFF
UINT32 = 0xFFFF_FFFF

EPOCH_MAX = 2**63 - 1
"""Epochs are random in 1..2**63-1 (they fit SQLite's signed 64-bit INTEGER); 0 means none."""
_EPOCH_HEX = re.compile(r"[0-9a-f]{16}")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ID_RULE = "1-64 chars of A-Z a-z 0-9 _ . -, starting with a letter or digit"


def json_type(value: object) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    if value.__class__ is bool:
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def fail_int(path: str, value: object, lo: int, hi: int) -> NoReturn:
    """Raise the right error for ``value`` that failed an integer range check."""
    if value.__class__ is not int:
        raise WireError(BAD_TYPE, path, f"expected an integer, got {json_type(value)}")
    raise WireError(BAD_VALUE, path, f"{value} is outside {lo}..{hi}")


def check_int(path: str, value: object, lo: int, hi: int) -> int:
    """An integer (never a bool) in ``lo..hi``."""
    if value.__class__ is not int or not lo <= value <= hi:
        fail_int(path, value, lo, hi)
    return value


def check_opt_int(path: str, value: object, lo: int, hi: int) -> int | None:
    if value is None:
        return None
    if value.__class__ is not int or not lo <= value <= hi:
        fail_int(path, value, lo, hi)
    return value


def check_ms(path: str, value: object) -> int:
    """Milliseconds since the Unix epoch (UTC), 0..2**53-1.

    No plausibility window on purpose: a panel whose clock was never set reports 2000-01-01,
    and that record must still be delivered (the gateway's receive time is beside it).
    """
    if value.__class__ is not int or not 0 <= value <= MAX_SAFE_INT:
        fail_int(path, value, 0, MAX_SAFE_INT)
    return value


def check_float(path: str, value: object, lo: float = -math.inf) -> float:
    """A finite number >= ``lo``; an integer is normalised to ``float``.

    Normalising matters downstream: InfluxDB types a field by its first write, so a
    pressure that arrives once as ``1`` and once as ``1.05`` must be a float both times.
    """
    if value.__class__ is float:
        f = value
        if f - f != 0.0:  # NaN and +-inf in one comparison, no function call
            raise WireError(WireErrorReason.NOT_FINITE, path, f"{f} is not finite")
    elif value.__class__ is int:
        try:
            f = float(value)
        except OverflowError:
            raise WireError(BAD_VALUE, path, "integer too large for a float") from None
    else:
        raise WireError(BAD_TYPE, path, f"expected a number, got {json_type(value)}")
    if f < lo:
        raise WireError(BAD_VALUE, path, f"{f} is below {lo}")
    return f


def check_opt_float(path: str, value: object, lo: float = -math.inf) -> float | None:
    return None if value is None else check_float(path, value, lo)


def check_bool(path: str, value: object) -> bool:
    if value.__class__ is not bool:
        raise WireError(BAD_TYPE, path, f"expected a boolean, got {json_type(value)}")
    return value


def check_id(path: str, value: object) -> str:
    """A gateway or site id: safe as an MQTT topic level, a file name and an Influx tag."""
    if value.__class__ is not str:
        raise WireError(BAD_TYPE, path, f"expected a string, got {json_type(value)}")
    if _ID.fullmatch(value) is None:
        raise WireError(BAD_VALUE, path, f"{value!r} is not a valid id ({ID_RULE})")
    return value


def check_token(path: str, value: object, max_len: int) -> str:
    """Printable ASCII without spaces, 1..max_len chars (source ids, command ids)."""
    if value.__class__ is not str:
        raise WireError(BAD_TYPE, path, f"expected a string, got {json_type(value)}")
    if not (0 < len(value) <= max_len and value.isascii() and value.isprintable()) or (
        " " in value
    ):
        raise WireError(
            BAD_VALUE, path, f"{value[:40]!r}: need 1-{max_len} printable ASCII chars, no space"
        )
    return value


def check_text(path: str, value: object, max_len: int, *, empty: bool = True) -> str:
    """Free text (Chinese welcome), at most ``max_len`` characters.

    Lone surrogates are refused: a JSON ``"\\ud800"`` escape decodes to one, and it cannot be
    written back as UTF-8, so accepting it would make the payload impossible to re-encode.
    """
    if value.__class__ is not str:
        raise WireError(BAD_TYPE, path, f"expected a string, got {json_type(value)}")
    n = len(value)
    if n > max_len or (n == 0 and not empty):
        raise WireError(BAD_VALUE, path, f"length {n} is outside {int(not empty)}..{max_len}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise WireError(BAD_VALUE, path, "lone surrogate in text") from None
    return value


def check_opt_text(path: str, value: object, max_len: int) -> str | None:
    return None if value is None else check_text(path, value, max_len)


def enum_error(path: str, value: object, allowed: Mapping[object, object]) -> WireError:
    if not isinstance(value, str):
        return WireError(BAD_TYPE, path, f"expected a string, got {json_type(value)}")
    return WireError(BAD_VALUE, path, f"{value[:40]!r} is not one of {sorted(map(str, allowed))}")


# Construction speed. A frozen dataclass stores each field through object.__setattr__
# (~130 ns a field on the reference machine, against ~8 ns for a plain slot store), and a
# class called with keyword arguments goes through a kwargs dict (~40 ns an argument). For a
# 14-field Event that is ~2 us - more than parsing its JSON. So:
#
# * each class has a plain "thawed" twin with the same slot layout. CPython allows
#   __class__ assignment between layout-identical classes, so an object is filled while
#   thawed and then switched to the frozen class; it is never visible while thawed, and if a
#   check raises it is discarded half-built;
# * the checks and stores live in one positional ``_fill_*`` function per class, called by
#   the public keyword-only ``__init__`` (pleasant, for drivers) and by the positional
#   ``new_*`` factories the decoder uses. One set of checks, two entry points.
set_field = object.__setattr__


def thawed_twin(cls: type) -> type:
    return type(f"_Thawed{cls.__name__}", (), {"__slots__": vars(cls)["__slots__"]})


def epoch_text(epoch: int) -> str:
    """An epoch's wire form: 16 lower-case hex digits."""
    return f"{epoch:016x}"


def check_epoch(path: str, value: object) -> int:
    """An epoch as the Python side holds it: an int in 0..2**63-1 (0 = none)."""
    if value.__class__ is not int:
        raise WireError(BAD_TYPE, path, f"expected an integer epoch, got {json_type(value)}")
    if not 0 <= value <= EPOCH_MAX:
        raise WireError(BAD_VALUE, path, f"an epoch is 0..{EPOCH_MAX}, got {value}")
    return value


def parse_epoch(path: str, value: object) -> int:
    """An epoch from its wire form: 16 lower-case hex digits, not all zero (absent = 0)."""
    if not isinstance(value, str):
        raise WireError(BAD_TYPE, path, f"expected 16 hex digits, got {json_type(value)}")
    if _EPOCH_HEX.fullmatch(value) is None:
        raise WireError(BAD_VALUE, path, f"expected 16 lower-case hex digits, got {value[:20]!r}")
    epoch = int(value, 16)
    if not 0 < epoch <= EPOCH_MAX:
        raise WireError(BAD_VALUE, path, f"an epoch is 1..7fffffffffffffff, got {value!r}")
    return epoch
