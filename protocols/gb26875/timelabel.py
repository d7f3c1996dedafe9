"""The 6-byte time label (时间标签, GB/T 26875.3-2011 §8.2.2, 图17).

Byte order on the wire: second, minute, hour, day, month, year (two digits, 0-99). Values are plain
binary, not BCD (every capture seen is binary). The standard defines no time zone: in practice it
is the device's local time, so a :class:`TimeLabel` is naive and converting it to an instant is the
caller's business (the edge agent applies the site's configured zone).

Devices send impossible labels (all zeros from a panel whose clock was never set, month 13 after a
glitch). Those must not crash a decoder, so a label keeps its six raw bytes and only offers a
``datetime`` when the fields form a real date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from protocols.gb26875.constants import TIME_LABEL_LEN

YEAR_BASE = 2000  # the standard has a two-digit year; every implementation adds 2000


@dataclass(frozen=True, slots=True)
class TimeLabel:
    """A GB/T 26875.3 time label, kept as its raw fields so any six bytes round-trip."""

    second: int
    minute: int
    hour: int
    day: int
    month: int
    year: int  # two-digit year as sent (0-99 when valid; any byte value is kept)

    @classmethod
    def from_bytes(cls, data: bytes) -> TimeLabel:
        """Decode six bytes (s, min, h, d, mon, y) without validating them."""
        if len(data) != TIME_LABEL_LEN:
            raise ValueError(f"a time label is {TIME_LABEL_LEN} bytes, got {len(data)}")
        return cls(data[0], data[1], data[2], data[3], data[4], data[5])

    @classmethod
    def from_datetime(cls, when: datetime) -> TimeLabel:
        """Encode a (naive, local) datetime; the year must be 2000-2099."""
        if not YEAR_BASE <= when.year < YEAR_BASE + 100:
            raise ValueError(f"year {when.year} does not fit a two-digit time label")
        return cls(when.second, when.minute, when.hour, when.day, when.month,
                   when.year - YEAR_BASE)

    def to_bytes(self) -> bytes:
        """The six wire bytes."""
        return bytes((self.second, self.minute, self.hour, self.day, self.month, self.year))

    @property
    def is_valid(self) -> bool:
        """True when the fields form a real calendar date and time."""
        return self.to_datetime() is not None

    def to_datetime(self) -> datetime | None:
        """The naive local datetime, or None for an impossible label (e.g. all zeros)."""
        if self.year > 99:
            return None
        try:
            return datetime(self.year + YEAR_BASE, self.month, self.day, self.hour, self.minute,
                            self.second)
        except ValueError:
            return None

    def __str__(self) -> str:
        dt = self.to_datetime()
        if dt is not None:
            return dt.isoformat(sep=" ")
        return "invalid(" + self.to_bytes().hex(" ") + ")"
