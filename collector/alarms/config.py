"""``[[escalation]]`` policies (stub: filled in by the alarms work)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.config import Table

__all__ = ["EscalationPolicy", "parse_escalation"]


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    """One ``[[escalation]]``."""

    name: str


def parse_escalation(tables: Sequence[Table], *, webhook_names: Sequence[str]
                     ) -> tuple[EscalationPolicy, ...]:
    """Validate every ``[[escalation]]`` (webhooks named must exist)."""
    return tuple(EscalationPolicy(t.text("name")) for t in tables)
