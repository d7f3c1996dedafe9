"""``[gb26875]``, ``[[gb26875.uitd]]``, ``[[gb26875.upstream]]`` (stub: filled in by the
centre work)."""

from __future__ import annotations

from dataclasses import dataclass

from common.config import Table

__all__ = ["CentreConfig", "parse_gb26875"]


@dataclass(frozen=True, slots=True)
class CentreConfig:
    """``[gb26875]``; None in CollectorConfig when there is no ``[gb26875]``."""

    listen: str


def parse_gb26875(t: Table | None) -> CentreConfig | None:
    """Validate ``[gb26875]`` with its UITDs and upstreams."""
    if t is None:
        return None
    return CentreConfig(t.text("listen"))
