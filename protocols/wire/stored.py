"""The collector's confirmation of what it stored (channel ``stored``, cloud -> gateway).

A broker's PUBACK is not a durable delivery (a broker crash loses what it acknowledged since
its last save, and a shared subscription it did not restore receives nothing): the point where
a gateway may delete a record is the collector's write. After each write the collector
publishes, per gateway and epoch, the seq ranges it has stored (or accounted for: a record
dead-lettered alone, or cut by a bound, is not coming back either)::

    {"v":1,"gw":"gw-01","ep":"5f0c2a91d3b7e468","seqs":[[1041,1044],[1050,1050]],
     "ts":1718000001500,"by":"collector-1"}

The gateway deletes those records if they are of its current epoch (``ep``; absent = 0) and
ignores the rest; a record it sent and did not see confirmed within its ``confirm_timeout_s``
is sent again, and the collector's de-duplication makes that safe (and confirms it again).
docs/wire-protocol.md, "Stored".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._checks import (
    BAD_TYPE,
    BAD_VALUE,
    MAX_SAFE_INT,
    check_epoch,
    check_id,
    check_ms,
    epoch_text,
    json_type,
    parse_epoch,
    set_field,
)
from ._json import VERSION, check_keys, dumps, parse, required
from .errors import WireError

__all__ = ["MAX_STORED_RANGES", "Stored", "decode_stored", "encode_stored", "seq_ranges",
           "split_ranges"]

MAX_STORED_RANGES = 2000
"""Ranges in one message (a batch of 5,000 records with every other seq missing is 2,500
records in 2,500 ranges: :func:`seq_ranges` output is split across messages by the sender)."""

_KEYS = frozenset({"v", "gw", "ep", "seqs", "ts", "by"})


@dataclass(frozen=True, slots=True)
class Stored:
    """Seqs of one gateway's epoch that a collector has stored: sorted, disjoint, non-adjacent
    ``(first, last)`` ranges, 1 <= first <= last < 2**53."""

    gateway_id: str
    epoch: int
    ranges: tuple[tuple[int, int], ...]
    ts_ms: int
    collector: str | None = None

    def __post_init__(self) -> None:
        check_id("gw", self.gateway_id)
        check_epoch("ep", self.epoch)
        check_ms("ts", self.ts_ms)
        if self.collector is not None:
            check_id("by", self.collector)
        set_field(self, "ranges", _check_ranges(self.ranges))

    def __contains__(self, seq: object) -> bool:
        return any(a <= seq <= b for a, b in self.ranges)  # type: ignore[operator]

    @property
    def count(self) -> int:
        return sum(b - a + 1 for a, b in self.ranges)


def _check_ranges(value: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list | tuple):
        raise WireError(BAD_TYPE, "seqs", f"expected an array of [first, last], got "
                                          f"{json_type(value)}")
    if not value:
        raise WireError(BAD_VALUE, "seqs", "at least one range")
    if len(value) > MAX_STORED_RANGES:
        raise WireError(BAD_VALUE, "seqs", f"{len(value)} ranges > {MAX_STORED_RANGES}")
    out: list[tuple[int, int]] = []
    below = 0
    for i, pair in enumerate(value):
        path = f"seqs[{i}]"
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise WireError(BAD_TYPE, path, "expected [first, last]")
        first, last = pair
        if first.__class__ is not int or last.__class__ is not int:
            raise WireError(BAD_TYPE, path, "seqs are integers")
        if not 1 <= first <= last <= MAX_SAFE_INT:
            raise WireError(BAD_VALUE, path, f"need 1 <= first <= last < 2**53, got "
                                             f"[{first}, {last}]")
        if i and first <= below + 1:
            raise WireError(BAD_VALUE, path, f"ranges are sorted, disjoint and not adjacent: "
                                             f"[{first}, {last}] after one ending at {below}")
        out.append((first, last))
        below = last
    return tuple(out)


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted distinct seqs as ``(first, last)`` runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if runs and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs


def encode_stored(stored: Stored) -> bytes:
    d: dict[str, object] = {"v": VERSION, "gw": stored.gateway_id}
    if stored.epoch:
        d["ep"] = epoch_text(stored.epoch)
    d["seqs"] = [list(r) for r in stored.ranges]
    d["ts"] = stored.ts_ms
    if stored.collector is not None:
        d["by"] = stored.collector
    return dumps(d)


def decode_stored(payload: bytes, *, max_bytes: int = 262_144) -> Stored:
    obj = parse(payload, max_bytes)
    check_keys(obj, _KEYS, "")
    return Stored(required(obj, "gw", ""),
                  parse_epoch("ep", obj["ep"]) if "ep" in obj else 0,
                  required(obj, "seqs", ""), required(obj, "ts", ""), obj.get("by"))


def split_ranges(ranges: Sequence[tuple[int, int]], limit: int = MAX_STORED_RANGES
                 ) -> list[list[tuple[int, int]]]:
    """``ranges`` cut into messages of at most ``limit`` ranges."""
    return [list(ranges[i:i + limit]) for i in range(0, len(ranges), limit)]
