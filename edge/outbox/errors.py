"""Typed outbox failures: every SQLite error becomes one reason, counted, never swallowed.

Callers branch on the type, not on message text: a driver that gets :class:`OutboxFull`
holds or denies upstream (a GB/T 26875.3 panel keeps the frame and retries), anything
else is an :class:`OutboxError` with a ``reason`` that names a counter in ``stats()``.
"""

from __future__ import annotations

import sqlite3
from enum import StrEnum

__all__ = [
    "ErrorReason",
    "OutboxClosed",
    "OutboxCorrupt",
    "OutboxError",
    "OutboxFull",
    "OutboxLocked",
    "classify",
]


class ErrorReason(StrEnum):
    """Counter names in ``OutboxStats.errors``."""

    FULL = "full"  # SQLITE_FULL: the disk, or max_file_bytes (max_page_count)
    IO = "io"  # SQLITE_IOERR_*: the storage failed a read, write or fsync
    CORRUPT = "corrupt"  # SQLITE_CORRUPT, SQLITE_NOTADB
    READONLY = "readonly"  # SQLITE_READONLY_*: remounted read-only after errors
    BUSY = "busy"  # SQLITE_BUSY/LOCKED: another process holds the database
    CANTOPEN = "cantopen"
    OTHER = "other"


# Primary result codes (the low byte of an extended code), from sqlite3.h.
_PRIMARY: dict[int, ErrorReason] = {
    13: ErrorReason.FULL,  # SQLITE_FULL
    10: ErrorReason.IO,  # SQLITE_IOERR
    11: ErrorReason.CORRUPT,  # SQLITE_CORRUPT
    26: ErrorReason.CORRUPT,  # SQLITE_NOTADB
    8: ErrorReason.READONLY,  # SQLITE_READONLY
    5: ErrorReason.BUSY,  # SQLITE_BUSY
    6: ErrorReason.BUSY,  # SQLITE_LOCKED
    14: ErrorReason.CANTOPEN,  # SQLITE_CANTOPEN
}


class OutboxError(Exception):
    """A storage failure; ``reason`` is the counter it was counted under."""

    def __init__(self, reason: ErrorReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


class OutboxFull(OutboxError):
    """The records were NOT stored: no room even after evicting every measurement.

    Raised for disk full and ``max_file_bytes``; the soft caps (``max_bytes``,
    ``max_rows``) evict by class instead and never raise this.
    """

    def __init__(self, message: str) -> None:
        super().__init__(ErrorReason.FULL, message)


class OutboxCorrupt(OutboxError):
    """The database file is damaged or not an outbox; it is left untouched for inspection."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorReason.CORRUPT, message)


class OutboxLocked(OutboxError):
    """Another outbox (in this or another process) has the database open."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorReason.BUSY, message)


class OutboxClosed(RuntimeError):
    """Used after :meth:`Outbox.close` (a programming error, not a storage failure)."""


def classify(error: sqlite3.Error) -> ErrorReason:
    """The reason for a sqlite3 exception, from its result code (Python >= 3.11)."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _PRIMARY.get(code & 0xFF, ErrorReason.OTHER)
    return ErrorReason.OTHER


def wrap(error: sqlite3.Error) -> OutboxError:
    """The typed error for a sqlite3 exception."""
    reason = classify(error)
    text = f"{getattr(error, 'sqlite_errorname', type(error).__name__)}: {error}"
    if reason is ErrorReason.FULL:
        return OutboxFull(text)
    if reason is ErrorReason.CORRUPT:
        return OutboxCorrupt(text)
    return OutboxError(reason, text)
