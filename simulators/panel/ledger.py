"""What the simulated UITD sent and what the centre confirmed: proof that every alarm arrived.

Each upload (command 2) is one :class:`LedgerEntry` from the moment it is queued: its type, a
human summary of its objects, every serial it went out under, how many times it was transmitted
and how it ended (``confirmed`` or ``failed``). The ledger also keeps a log of everything else the
UITD did on the link (answers to reads, confirms of controls, withheld confirms, denies of damaged
frames, link losses) as plain records; with a file the log is written as JSON lines as it happens,
so a test or an installer can check afterwards that every fire alarm was delivered.

Memory is bounded: finished entries beyond ``max_entries`` and log records beyond ``max_records``
are dropped oldest first (the counters and the file keep everything).
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from protocols.gb26875 import (
    AnalogValue,
    ApplicationData,
    ComponentStatus,
    FacilityOperationRecord,
    InfoObject,
    SystemStatus,
    UitdOperationRecord,
    UitdStatus,
    type_name,
)
from protocols.gb26875.render import object_to_data
from protocols.gb26875.tables import COMPONENT_TYPES, SYSTEM_TYPES, flag_names, lookup


class Status(StrEnum):
    """Where an upload stands."""

    QUEUED = "queued"  # waiting for the link or for the upload before it
    SENT = "sent"  # transmitted, waiting for the confirm
    CONFIRMED = "confirmed"  # command 3 received
    FAILED = "failed"  # no confirm after every resend, or denied every time


@dataclass
class LedgerEntry:
    """One upload: a fire alarm, a state change, an operation record, a periodic state..."""

    id: int
    action: str  # the scenario action (or "periodic", "check_post_answer", ...)
    type_mark: int
    summary: str
    objects: list[dict[str, Any]]
    queued_at: float  # scenario seconds
    priority: int
    serials: list[int] = field(default_factory=list)  # one per transaction (link)
    attempts: int = 0  # transmissions, counting resends (not injected duplicates)
    status: Status = Status.QUEUED
    sent_at: float | None = None
    done_at: float | None = None
    reason: str = ""

    @property
    def serial(self) -> int | None:
        """The serial of the last transmission."""
        return self.serials[-1] if self.serials else None

    def to_data(self) -> dict[str, Any]:
        return {
            "id": self.id, "action": self.action, "type_mark": self.type_mark,
            "type": type_name(self.type_mark), "summary": self.summary, "status": self.status.value,
            "serials": list(self.serials), "attempts": self.attempts, "queued_at": self.queued_at,
            "sent_at": self.sent_at, "done_at": self.done_at, "reason": self.reason,
            "objects": self.objects,
        }


class UploadLedger:
    """Uploads and link events, in memory and optionally as JSON lines."""

    def __init__(self, path: str | Path | None = None, *, max_entries: int = 100_000,
                 max_records: int = 10_000, describe: bool = True) -> None:
        self._entries: dict[int, LedgerEntry] = {}
        self._done: deque[int] = deque()
        self.max_entries = max_entries
        self.records: deque[dict[str, Any]] = deque(maxlen=max_records)
        self.counts: Counter[str] = Counter()
        self._next_id = 1
        # False: entries carry no summary and no objects as data (a fleet of thousands of
        # UITDs keeps its own account and would spend a fifth of its time rendering them)
        self.describe = describe
        self.on_record: Callable[[dict[str, Any]], None] | None = None  # e.g. the CLI's printer
        self._file: IO[str] | None = None
        if path is not None:
            self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def close(self) -> None:
        """Close the JSON-lines file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- entries -----------------------------------------------------------------------------

    @property
    def entries(self) -> list[LedgerEntry]:
        """Every entry still held, oldest first."""
        return list(self._entries.values())

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(list(self._entries.values()))

    def get(self, entry_id: int) -> LedgerEntry:
        return self._entries[entry_id]

    def with_status(self, *status: Status) -> list[LedgerEntry]:
        return [e for e in self._entries.values() if e.status in status]

    def undelivered(self) -> list[LedgerEntry]:
        """Entries not confirmed (queued, in flight or failed)."""
        return [e for e in self._entries.values() if e.status is not Status.CONFIRMED]

    def add(self, action: str, adu: ApplicationData, queued_at: float,
            priority: int) -> LedgerEntry:
        entry = LedgerEntry(self._next_id, action, adu.type_mark,
                            summarize(adu) if self.describe else "",
                            [object_to_data(o) for o in adu.objects] if self.describe else [],
                            queued_at, priority)
        self._next_id += 1
        self._entries[entry.id] = entry
        self.counts["queued"] += 1
        self.log("queued", queued_at, entry)
        return entry

    def transmitted(self, entry: LedgerEntry, serial: int, now: float, resend: bool,
                    why: str = "") -> None:
        entry.attempts += 1
        if not resend:  # a new transaction (first sending, or again after a link loss)
            entry.serials.append(serial)
        if entry.sent_at is None:
            entry.sent_at = now
        entry.status = Status.SENT
        self.counts["transmissions"] += 1
        self.log("resent" if resend else "sent", now, entry, serial=serial,
                 **({"why": why} if why else {}))

    def requeued(self, entry: LedgerEntry, now: float, why: str) -> None:
        entry.status = Status.QUEUED
        self.log("requeued", now, entry, why=why)

    def finish(self, entry: LedgerEntry, status: Status, now: float, reason: str = "") -> None:
        entry.status, entry.done_at, entry.reason = status, now, reason
        self.counts[status.value] += 1
        self.log(status.value, now, entry, **({"reason": reason} if reason else {}))
        self._done.append(entry.id)
        while len(self._done) > self.max_entries:
            self._entries.pop(self._done.popleft(), None)

    # -- log ---------------------------------------------------------------------------------

    def log(self, event: str, now: float, entry: LedgerEntry | None = None,
            **fields: Any) -> dict[str, Any]:
        """Append a record (and write it as a JSON line)."""
        record: dict[str, Any] = {"t": round(now, 3), "event": event}
        if entry is not None:
            record.update(entry=entry.id, action=entry.action, type_mark=entry.type_mark,
                          summary=entry.summary, attempts=entry.attempts)
            if entry.serials and "serial" not in fields:
                record["serial"] = entry.serials[-1]
        record.update(fields)
        self.records.append(record)
        self.counts[f"log_{event}"] += 1
        if self._file is not None:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()
        if self.on_record is not None:
            self.on_record(record)
        return record


def summarize(adu: ApplicationData) -> str:
    """One line per upload, e.g. ``component_state: 1/1 点型光电感烟火灾探测器 0x00000bb9
    "3F 东侧走廊" normal+fire_alarm``."""
    name = type_name(adu.type_mark)
    parts = [_describe(o) for o in adu.objects]
    if not parts:
        return name
    shown = "; ".join(parts[:3]) + (f"; ... ({len(parts)} objects)" if len(parts) > 3 else "")
    return f"{name}: {shown}"


def _describe(obj: InfoObject) -> str:
    if isinstance(obj, ComponentStatus):
        ctype = lookup(COMPONENT_TYPES, obj.component_type).zh
        return (f"{obj.system_type}/{obj.system_address} {ctype} {obj.address} "
                f"\"{obj.description}\" {'+'.join(flag_names(obj.state)) or 'none'}")
    if isinstance(obj, SystemStatus):
        stype = lookup(SYSTEM_TYPES, obj.system_type).zh
        return (f"{obj.system_type}/{obj.system_address} {stype} "
                f"{'+'.join(flag_names(obj.state)) or 'none'}")
    if isinstance(obj, AnalogValue):
        return f"{obj.system_type}/{obj.system_address} {obj.address} {obj.value:g} {obj.unit}"
    if isinstance(obj, FacilityOperationRecord):
        return (f"{obj.system_type}/{obj.system_address} "
                f"{'+'.join(flag_names(obj.flags)) or 'none'} operator {obj.operator}")
    if isinstance(obj, UitdOperationRecord):
        return f"{'+'.join(flag_names(obj.flags)) or 'none'} operator {obj.operator}"
    if isinstance(obj, UitdStatus):
        return "+".join(flag_names(obj.state)) or "none"
    return type(obj).__name__
