"""Typed failures of the wire contract.

Every rejection - by a decoder, by an encoder or by a record constructor - is a
:class:`WireError` carrying one :class:`WireErrorReason` and a ``path`` into the message
(``recs[3].v``, ``src.id``, ``topic``). The collector keeps one counter per reason and
reports it in its own health, so reasons are distinct and stable: they are part of v1.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["WireError", "WireErrorReason"]


class WireErrorReason(StrEnum):
    """Why a payload, a topic or a value was refused. Values are stable counter names."""

    TOO_LARGE = "too_large"
    """Payload longer than the size limit (checked before parsing), or a record that can
    never fit into one payload when encoding."""
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    """Not parseable as JSON (includes trailing garbage, a BOM, absurd nesting)."""
    NOT_OBJECT = "not_object"
    """The top-level JSON value is not an object."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """``"v"`` is an integer other than 1, or the topic names another version."""
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    """Wrong JSON type, including ``true``/``false`` where an integer is expected."""
    BAD_VALUE = "bad_value"
    """Right type, refused value: out of range, unknown enum value, unit not allowed for
    the quantity, malformed id, text too long, lone surrogate."""
    UNKNOWN_FIELD = "unknown_field"
    """A key that v1 does not define and that does not start with ``x_``."""
    NOT_FINITE = "not_finite"
    """NaN or an infinity (``NaN``, ``Infinity``, or a literal like ``1e999``)."""
    EMPTY_BATCH = "empty_batch"
    TOO_MANY_RECORDS = "too_many_records"
    DUPLICATE_SEQ = "duplicate_seq"
    """The same ``seq`` twice in one batch (or in one ``encode_batches`` call)."""
    GATEWAY_MISMATCH = "gateway_mismatch"
    """The topic's gateway id differs from the payload's ``gw``."""
    BAD_TOPIC = "bad_topic"
    """A topic that is not ``firegate/v1/<gateway_id>/<channel>``."""


class WireError(ValueError):
    """A refusal with a reason and a path.

    ``path`` uses the wire keys, dotted, with ``[i]`` for list items: ``recs[3].src.id``.
    The empty string means the whole payload. ``str(err)`` is ``"<reason> at <path>:
    <message>"`` so a log line is self-explanatory.
    """

    __slots__ = ("message", "path", "reason")

    def __init__(self, reason: WireErrorReason, path: str, message: str) -> None:
        super().__init__(reason, path, message)
        self.reason = reason
        self.path = path
        self.message = message

    def __str__(self) -> str:
        where = self.path or "<payload>"
        return f"{self.reason.value} at {where}: {self.message}"

    def under(self, prefix: str) -> WireError:
        """The same error with ``prefix`` prepended to its path (``recs[3]`` + ``v``)."""
        if not self.path:
            path = prefix
        elif self.path.startswith("["):
            path = prefix + self.path
        else:
            path = f"{prefix}.{self.path}"
        return WireError(self.reason, path, self.message)
