"""What an alarm is: the records the book keeps and hands out (pure data, no I/O).

Every value here is a frozen copy: the API thread may hold one while the writer thread changes
the book. Text fields carry what the field sent, raw (a panel's description is hostile text:
whoever renders it escapes it; docs/alarms.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

__all__ = [
    "ACTIVE",
    "CLEARED",
    "VERDICTS",
    "Alarm",
    "AlarmChange",
    "AlarmConflict",
    "AlarmNotFound",
    "AuditEntry",
    "Change",
    "SiteChange",
    "TimelineEntry",
    "Verdict",
]

Verdict = Literal["real", "false", "test"]
VERDICTS: tuple[str, ...] = ("real", "false", "test")
ACTIVE, CLEARED = "active", "cleared"

# Timeline "what" values (docs/alarms.md, "Timeline").
RAISED, RE_RAISED, NOTIFIED = "raised", "re-raised", "notified"
ACKNOWLEDGED, CLEARED_WHAT, RESOLVED = "acknowledged", "cleared", "resolved"
ESCALATION_STOPPED = "escalation_stopped"


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm: a condition raised at (gateway, source, type), from its first raise until it
    is closed (acknowledged, and cleared or resolved: :attr:`open`)."""

    id: str
    """Stable, opaque, URL-safe (``a`` + 16 hex digits), never reused."""
    gateway: str
    site: str
    source: str
    """The record's source id; ``""`` for a gateway-level alarm (offline, records missing)."""
    description: str
    """The source's description and the event's value, raw as sent."""
    type: str
    """An event type (``fire_alarm``...), ``gateway_offline`` or ``records_missing``."""
    priority: str
    """``fire``, ``alarm`` or ``event`` (the wire's priority labels)."""
    state: str
    """``active`` or ``cleared``."""
    raised_ms: int
    """The collector's time of the first raise (escalation counts from it)."""
    panel_ms: int | None
    """The panel's or device's own time of the first raise, when it sent one."""
    cleared_ms: int | None
    raise_count: int
    """Raises while open, the first included."""
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_ms: int | None
    note: str | None
    """The acknowledgement's note."""
    resolution: Verdict | None
    resolved_by: str | None
    resolved_ms: int | None
    resolution_note: str | None
    escalation_policy: str | None
    """The ``[[escalation]]`` that took it (the first matching in file order); None: none."""
    escalation_step: int
    """The last step notified; -1: none yet."""
    gateway_ms: int | None = None
    """The gateway's receive time of the first raise (None for a gateway-level alarm)."""
    next_step_ms: int | None = None
    """When the next escalation step is due; None: no further step (or stopped)."""

    @property
    def open(self) -> bool:
        """Open until acknowledged and (cleared or resolved) - docs/alarms.md."""
        return not (self.acknowledged and (self.state == CLEARED or self.resolution is not None))

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.gateway, self.source, self.type)

    def to_json(self) -> dict[str, object]:
        """Every field, names as above, plus ``open``."""
        out = asdict(self)
        out["open"] = self.open
        return out


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One thing that happened to an alarm."""

    at_ms: int
    what: str
    """``raised``, ``re-raised``, ``notified``, ``acknowledged``, ``cleared``, ``resolved``,
    ``escalation_stopped``."""
    by: str | None = None
    detail: str | None = None
    """The step and its webhooks, the note, the verdict..."""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what to which alarm, from where (acknowledge, resolve)."""

    at_ms: int
    user: str
    action: str
    """``acknowledge`` or ``resolve``."""
    alarm_id: str
    origin: str
    """The client's address, or ``cli``."""
    detail: str | None = None
    seq: int = 0
    """Its place in the log (SQLite rowid, increasing): with ``at_ms`` the paging cursor, so
    entries of the same millisecond are neither skipped nor repeated between pages."""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """An alarm changed (fed to subscribers after it is persisted)."""

    alarm: Alarm
    what: str
    """The timeline ``what`` of the change."""
    kind: Literal["alarm"] = "alarm"


@dataclass(frozen=True, slots=True)
class SiteChange:
    """A site's risk colour changed (fed to subscribers after the registry has it)."""

    site: str
    colour: str
    reasons: tuple[str, ...]
    at_ms: int
    kind: Literal["site"] = "site"


Change = AlarmChange | SiteChange


class AlarmNotFound(LookupError):
    """No alarm has that id (never had, or pruned after its retention)."""


class AlarmConflict(ValueError):
    """The action does not fit the alarm's state (acknowledged twice, resolved twice); the
    message says why."""
