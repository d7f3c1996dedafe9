"""Fault injection: what a bad line and a quirky UITD do to the frames the centre receives.

Faults are armed either by the timeline (``action = "garbage"``, ``count = 3``: the next three
frames) or for the whole run by probabilities in ``[panel.faults]``. They act where they would act
in the field:

=====================  ========================================================================
``garbage``            random bytes on the line before a frame (noise, a wrong-baud burst)
``split``              a frame arrives in several pieces with idle gaps (slow UART, TCP segments)
``bad_checksum``       an upload's checksum is wrong: the centre must deny it (§6.5.3) and the
                       UITD resends the good bytes, as the session's resend always does
``duplicate_frame``    the UITD writes an upload twice (same serial, same bytes)
``withhold_confirm``   the UITD does not answer a control or request it received, so the centre
                       must resend it and the UITD must answer without executing it twice
``duplicate_confirm``  the UITD answers a control or request twice
=====================  ========================================================================

``bad_checksum`` and ``duplicate_frame`` apply to uploads (command 2) only; ``garbage`` and
``split`` to every frame. Link loss (``link_loss``) is handled by the engine: it stops the UITD
from sending and answering.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

# Fault names that the timeline arms with a count (and that [panel.faults] gives a rate).
FRAME_FAULTS = ("garbage", "split", "bad_checksum", "duplicate_frame")
ANSWER_FAULTS = ("withhold_confirm", "duplicate_confirm")
FAULTS = FRAME_FAULTS + ANSWER_FAULTS


@dataclass(frozen=True, slots=True)
class Transmission:
    """Bytes for the line: ``parts`` written in order, ``gap`` real seconds apart."""

    parts: tuple[bytes, ...]
    gap: float = 0.0
    what: str = ""

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Per-frame probabilities for the whole run, and the shape of each fault."""

    garbage: float = 0.0
    split: float = 0.0
    bad_checksum: float = 0.0
    duplicate_frame: float = 0.0
    withhold_confirm: float = 0.0
    duplicate_confirm: float = 0.0
    garbage_bytes: int = 16  # how many bytes of noise before a frame
    split_parts: int = 3  # pieces of a split frame
    split_gap: float = 0.02  # real seconds between the pieces
    seed: int | None = None

    def rate(self, name: str) -> float:
        value: float = getattr(self, name)
        return value


class Faults:
    """The armed faults and the random generator that decides the probabilistic ones."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self.settings = settings or FaultSettings()
        self.rng = random.Random(self.settings.seed)
        self.armed: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.garbage_bytes = self.settings.garbage_bytes
        self.split_parts = self.settings.split_parts
        self.split_gap = self.settings.split_gap

    def arm(self, name: str, count: int = 1, *, garbage_bytes: int | None = None,
            split_parts: int | None = None, split_gap: float | None = None) -> None:
        """Apply fault ``name`` to the next ``count`` frames (or received commands)."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        self.armed[name] += count
        if garbage_bytes is not None:
            self.garbage_bytes = garbage_bytes
        if split_parts is not None:
            self.split_parts = split_parts
        if split_gap is not None:
            self.split_gap = split_gap

    def take(self, name: str) -> bool:
        """Whether fault ``name`` hits this frame: an armed count first, then the rate."""
        if self.armed[name] > 0:
            self.armed[name] -= 1
        elif not (self.settings.rate(name) > 0 and self.rng.random() < self.settings.rate(name)):
            return False
        self.injected[name] += 1
        return True

    def shape(self, frame: bytes, *, upload: bool, what: str = "") -> tuple[Transmission,
                                                                          list[str]]:
        """The transmission of one frame with the faults that hit it, and their names."""
        hit: list[str] = []
        data = frame
        if upload and self.take("bad_checksum"):
            data = data[:-3] + bytes((data[-3] ^ 0xFF,)) + data[-2:]
            hit.append("bad_checksum")
        if upload and self.take("duplicate_frame"):
            data += data
            hit.append("duplicate_frame")
        if self.take("garbage"):
            data = self.rng.randbytes(self.garbage_bytes) + data
            hit.append("garbage")
        if self.take("split") and self.split_parts > 1 and len(data) > 1:
            hit.append("split")
            return Transmission(_cut(data, self.split_parts), self.split_gap, what), hit
        return Transmission((data,), 0.0, what), hit


def _cut(data: bytes, parts: int) -> tuple[bytes, ...]:
    parts = min(parts, len(data))
    size, extra = divmod(len(data), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append(data[start:end])
        start = end
    return tuple(out)
