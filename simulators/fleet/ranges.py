"""Sets of sequence numbers kept as compact ranges: ``[[1, 5000], [5002, 9000]]``.

A gateway numbers its records 1, 2, 3, ... so what it produced, what the broker acknowledged and
what it sent twice are long runs with few holes. Storing them as sorted, disjoint closed
intervals keeps a ledger of millions of records to a few numbers per gateway and makes "which
seqs are missing" a cheap difference.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence

__all__ = ["SeqRanges"]


class SeqRanges:
    """A set of positive integers stored as sorted, disjoint, non-adjacent closed ranges."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, seqs: Iterable[int] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.update(seqs)

    @classmethod
    def from_ranges(cls, ranges: Iterable[Sequence[int]]) -> SeqRanges:
        """The set covering each ``(first, last)`` pair (as written by :meth:`to_json`)."""
        out = cls()
        for first, last in ranges:
            out.add_range(first, last)
        return out

    def add_range(self, first: int, last: int) -> None:
        """Add ``first..last`` inclusive (nothing if ``last < first``)."""
        if last < first:
            return
        starts, ends = self._starts, self._ends
        # Ranges that overlap or touch first..last: ends >= first - 1 and starts <= last + 1.
        i = bisect_left(ends, first - 1)
        j = bisect_right(starts, last + 1)
        if i < j:
            first = min(first, starts[i])
            last = max(last, ends[j - 1])
        starts[i:j] = [first]
        ends[i:j] = [last]

    def add(self, seq: int) -> None:
        self.add_range(seq, seq)

    def update(self, seqs: Iterable[int]) -> None:
        """Add many seqs, in any order (sorted once, then added run by run)."""
        ordered = sorted(seqs)
        if not ordered:
            return
        first = last = ordered[0]
        for s in ordered[1:]:
            if s > last + 1:
                self.add_range(first, last)
                first = s
            last = s
        self.add_range(first, last)

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, int):
            return False
        i = bisect_right(self._starts, seq) - 1
        return i >= 0 and seq <= self._ends[i]

    def __len__(self) -> int:
        return sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[int]:
        for s, e in zip(self._starts, self._ends, strict=True):
            yield from range(s, e + 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeqRanges):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    __hash__ = None  # type: ignore[assignment]  # mutable

    def ranges(self) -> list[tuple[int, int]]:
        """``[(first, last), ...]`` in increasing order."""
        return list(zip(self._starts, self._ends, strict=True))

    def difference(self, other: SeqRanges) -> SeqRanges:
        """The seqs in ``self`` that are not in ``other``."""
        out = SeqRanges()
        for first, last in self.ranges():
            cursor = first
            i = bisect_right(other._ends, first - 1)  # first range of other ending >= first
            while i < len(other._starts) and other._starts[i] <= last:
                out.add_range(cursor, other._starts[i] - 1)
                cursor = max(cursor, other._ends[i] + 1)
                i += 1
            out.add_range(cursor, last)
        return out

    def to_json(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self._starts, self._ends, strict=True)]

    def __repr__(self) -> str:
        shown = ", ".join(f"{s}" if s == e else f"{s}-{e}" for s, e in self.ranges()[:8])
        more = ", ..." if len(self._starts) > 8 else ""
        return f"SeqRanges({shown}{more})"
