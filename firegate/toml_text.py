"""TOML text of the files the top floor generates: the agent's config (provisioning, the demo),
the collector's config and the demo's scenario.

The standard library reads TOML (``tomllib``) but does not write it; tomli-w, the writing half
of the library that became ``tomllib``, does, and what it writes ``tomllib`` reads back equal.
All this module adds is the comment a generated file starts with (who wrote it, from what).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomli_w

__all__ = ["dumps_toml"]


def dumps_toml(doc: Mapping[str, Any], comment: str = "") -> str:
    """``doc`` as TOML text, after ``comment`` as ``#`` lines and a blank line.

    ``doc`` holds TOML's types only (tables, arrays, strings, numbers, booleans, dates); a
    ``None`` or any other object raises :class:`TypeError`.
    """
    head = "".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines())
    return head + ("\n" if head else "") + tomli_w.dumps(doc)
