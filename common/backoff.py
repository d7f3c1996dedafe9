"""Exponential back-off, the one used by every retry loop in firegate: the agent's task
supervisor, the panel link's reopen, the BLE scanner's restart, the MQTT uplink's reconnect.

The n-th delay is ``d = min(max_s, min_s * 2**n)``, shortened by up to ``jitter`` of itself
at random and never below ``min_s``: with ``jitter=0.5`` ("equal jitter") a delay is uniform
in [d/2, d], so a fleet of gateways that lost its broker at the same moment does not come
back in one wave; with ``jitter=0`` it is exact (a local restart, where nothing competes).
``reset()`` after a success starts again from ``min_s``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Delays for successive retries; ``next()`` the coming one, ``reset()`` when healthy."""

    def __init__(self, min_s: float, max_s: float, *, jitter: float = 0.0,
                 rng: Callable[[], float] = random.random) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"need 0 < min_s <= max_s, got {min_s} and {max_s}")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be 0..1, got {jitter}")
        self.min_s, self.max_s, self.jitter = min_s, max_s, jitter
        self._rng = rng
        self._n = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset."""
        return self._n

    def next(self) -> float:
        d = min(self.max_s, self.min_s * 2.0 ** min(self._n, 32))
        self._n += 1
        if self.jitter:
            d *= 1.0 - self.jitter + self.jitter * self._rng()
        return max(self.min_s, d)

    def reset(self) -> None:
        self._n = 0
