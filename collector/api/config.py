"""``[http]`` and ``[[user]]`` (stub: filled in by the API work)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.config import Table

__all__ = ["HttpConfig", "parse_http"]


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """``[http]`` with its users; None in CollectorConfig when there is no ``[http]``."""

    host: str
    port: int


def parse_http(http: Table | None, users: Sequence[Table]) -> HttpConfig | None:
    """Validate ``[http]`` and every ``[[user]]``."""
    if http is None:
        return None
    host, port = http.text("listen").rsplit(":", 1)
    return HttpConfig(host, int(port))
