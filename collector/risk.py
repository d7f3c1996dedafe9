"""Three-colour risk per site (三色预警): green, yellow, red, from the conditions active there.

Pure logic, no I/O: :class:`RiskBoard` holds the active conditions (a fire alarm on a panel
point, a fault, a sensor offline, a gateway offline, water pressure below its critical limit)
and answers the colour of a site with the reasons behind it. The pipeline feeds it the records
it has just stored, in order, and persists the changes it reports (``registry.py``); the rules
come from ``[risk]`` (:class:`collector.config.RiskRules`) and are documented in
docs/collector.md.

* **red** while a condition of ``red_events`` is active (a fire alarm), or water supply is
  critically low: a ``threshold_low`` from a source matching ``critical_low_sources``, or a
  pressure / level reading below ``pressure_critical_mpa`` / ``level_critical_m``;
* **yellow** while a condition of ``yellow_events`` is active (faults, offline sensors,
  threshold warnings...), or a gateway of the site is offline (``gateway_offline``);
* **green** otherwise.

A condition is raised by an event with ``on: true`` and cleared by the same event type from the
same source with ``on: false``. Fire alarms latch on real panels until the panel is reset, so a
``reset`` event also clears the ``reset_clears`` conditions of the panel it came from, but only
those raised at or before the reset's own time (``RiskBoard._raised_by``): a panel's backlog
can arrive reordered, and a reset must never clear a fire alarm the panel raised after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from fnmatch import fnmatchcase

from collector.config import RECORDS_MISSING, RiskRules
from protocols.wire import Event, EventType, Measurement, Quantity

__all__ = ["Assessment", "Colour", "Condition", "RiskBoard", "compare_record_times",
           "reset_prefix"]

PRESSURE_CRITICAL = "pressure_critical"
LEVEL_CRITICAL = "level_critical"
GATEWAY_OFFLINE = "gateway_offline"
GATEWAY_SOURCE = "gateway"
MAX_REASONS = 20

# Conversion of the contract's units to MPa and metres (docs/wire-protocol.md, units table).
_TO_MPA = {"MPa": 1.0, "kPa": 0.001, "bar": 0.1}
_TO_M = {"m": 1.0, "cm": 0.01, "mm": 0.001}


class Colour(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Colour.GREEN: 0, Colour.YELLOW: 1, Colour.RED: 2}


@dataclass(frozen=True, slots=True)
class Condition:
    """One active condition at a site."""

    site: str
    gateway_id: str
    source_id: str
    kind: str
    """An event type value, or ``pressure_critical``, ``level_critical``, ``gateway_offline``."""
    since_ms: int
    seq: int
    """The record that raised it (0 for gateway conditions)."""
    colour: Colour
    text: str = ""
    """Human description: the source's ``desc`` or the reading."""
    raised_ms: int | None = None
    """Gateway receive time of the latest record that raised it (None: ``since_ms``); a
    repeat while active moves this, not ``since_ms``."""
    raised_source_ms: int | None = None
    """That record's own device time (the panel clock), when it carried one."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.gateway_id, self.source_id, self.kind)

    def reason(self) -> str:
        where = f"{self.gateway_id} {self.source_id}" if self.source_id else self.gateway_id
        return f"{self.kind}: {where}" + (f" {self.text}" if self.text else "")


@dataclass(frozen=True, slots=True)
class Assessment:
    """The colour of a site and why (most severe reasons first)."""

    site: str
    colour: Colour
    reasons: tuple[str, ...]


def reset_prefix(source_id: str) -> str:
    """The sources a reset from ``source_id`` clears: those starting with the returned prefix.
    ``panel/1-1/system`` resets everything under ``panel/1-1/``; a source without two levels
    resets the whole gateway (``""``)."""
    parts = source_id.split("/")
    return "/".join(parts[:2]) + "/" if len(parts) >= 3 else ""


def compare_record_times(a_ms: int, a_source_ms: int | None, b_ms: int,
                         b_source_ms: int | None, *, same_clock: bool) -> int:
    """Order two records by record time: negative if ``a`` is earlier, 0 the same, positive
    later. The device's own times (``source_ms``) when both have one and come from one device
    (``same_clock``: one panel, one clock, right or wrong), else the gateway's receive times.
    The one rule for "raised at or before this reset" (here and, for the same reason, in any
    other consumer of resets)."""
    if same_clock and a_source_ms is not None and b_source_ms is not None:
        return (a_source_ms > b_source_ms) - (a_source_ms < b_source_ms)
    return (a_ms > b_ms) - (a_ms < b_ms)


def _latest(c: Condition) -> tuple[int, int | None]:
    """Receive time and device time of the latest record that raised ``c``."""
    return (c.since_ms if c.raised_ms is None else c.raised_ms), c.raised_source_ms


class RiskBoard:
    """Active conditions per site; every ``apply_*`` returns the sites whose conditions changed.

    Changes are also collected in :attr:`raised` / :attr:`cleared` until :meth:`take_changes`,
    so the caller can persist exactly what moved.
    """

    def __init__(self, rules: RiskRules, conditions: Iterable[Condition] = ()) -> None:
        self.rules = rules
        self._by_site: dict[str, dict[tuple[str, str, str], Condition]] = {}
        self._last_seq: dict[tuple[str, str, str], int] = {}
        # The store epoch of that last record (None: not known, e.g. loaded from the registry).
        self._last_epoch: dict[tuple[str, str, str], int | None] = {}
        self.raised: dict[tuple[str, str, str], Condition] = {}
        self.cleared: dict[tuple[str, str, str], Condition] = {}
        for c in conditions:
            self._by_site.setdefault(c.site, {})[c.key] = c
            self._last_seq[c.key] = c.seq
        self._watch_pressure = rules.pressure_critical_mpa is not None
        self._watch_level = rules.level_critical_m is not None

    # -- classification ----------------------------------------------------------------------

    def colour_of(self, kind: str, source_id: str) -> Colour | None:
        """The colour a condition of ``kind`` from ``source_id`` gives its site (None: not
        tracked)."""
        rules = self.rules
        if kind in rules.red_events or kind in (PRESSURE_CRITICAL, LEVEL_CRITICAL):
            return Colour.RED
        if kind == EventType.THRESHOLD_LOW and any(
                fnmatchcase(source_id, p) for p in rules.critical_low_sources):
            return Colour.RED
        if kind == GATEWAY_OFFLINE:
            return None if rules.gateway_offline is None else Colour(rules.gateway_offline)
        if kind == RECORDS_MISSING:
            return None if rules.records_missing is None else Colour(rules.records_missing)
        if kind in rules.yellow_events:
            return Colour.YELLOW
        return None

    # -- inputs ------------------------------------------------------------------------------

    def apply_event(self, site: str, gateway_id: str, event: Event,
                    epoch: int | None = None) -> bool:
        """Raise, clear or reset from one stored event of the gateway's store ``epoch``;
        True when a condition changed."""
        kind = event.type.value
        if event.type is EventType.RESET or (
                event.type is EventType.OPERATION and "reset" in event.operations):
            return self._reset(site, gateway_id, event, epoch)
        colour = self.colour_of(kind, event.source.id)
        if colour is None:
            return False
        key = (gateway_id, event.source.id, kind)
        if self._superseded(key, epoch, event.seq):
            return False  # an older record of this condition arriving late: already superseded
        if event.active:
            text = event.source.description or ""
            if event.value is not None:
                text = f"{text} {event.value:g}".strip()
            return self._raise(Condition(site, gateway_id, event.source.id, kind,
                                         event.receive_ms, event.seq, colour, text,
                                         event.receive_ms, event.source_ms))
        return self._clear(site, key)

    def apply_measurement(self, site: str, gateway_id: str, m: Measurement,
                          epoch: int | None = None) -> bool:
        """Water supply limits: a pressure or level reading below its critical value is red
        until a reading at or above it arrives."""
        if m.quantity is Quantity.PRESSURE and self._watch_pressure:
            limit, value, kind = self.rules.pressure_critical_mpa, _TO_MPA[m.unit] * m.value, \
                PRESSURE_CRITICAL
            shown = f"{value:g} MPa"
        elif m.quantity is Quantity.LEVEL and self._watch_level:
            limit, value, kind = self.rules.level_critical_m, _TO_M[m.unit] * m.value, \
                LEVEL_CRITICAL
            shown = f"{value:g} m"
        else:
            return False
        assert limit is not None
        key = (gateway_id, m.source.id, kind)
        if self._superseded(key, epoch, m.seq):
            return False
        if value < limit:
            if key in self._by_site.get(site, {}):
                return False
            return self._raise(Condition(site, gateway_id, m.source.id, kind, m.receive_ms,
                                         m.seq, Colour.RED, f"{shown} < {limit:g}"))
        return self._clear(site, key)

    def set_gateway_offline(self, site: str, gateway_id: str, offline: bool,
                            now_ms: int) -> bool:
        """A gateway went offline (last will, shutdown, stale heartbeat) or came back."""
        key = (gateway_id, GATEWAY_SOURCE, GATEWAY_OFFLINE)
        if not offline:
            return self._clear(site, key)
        colour = self.colour_of(GATEWAY_OFFLINE, GATEWAY_SOURCE)
        if colour is None or key in self._by_site.get(site, {}):
            return False
        return self._raise(Condition(site, gateway_id, GATEWAY_SOURCE, GATEWAY_OFFLINE, now_ms,
                                     0, colour))

    def set_records_missing(self, site: str, gateway_id: str, missing: bool, now_ms: int,
                            text: str = "") -> bool:
        """A gateway's records are missing past the grace time (a gap), or no longer are."""
        key = (gateway_id, GATEWAY_SOURCE, RECORDS_MISSING)
        if not missing:
            return self._clear(site, key)
        colour = self.colour_of(RECORDS_MISSING, GATEWAY_SOURCE)
        if colour is None or key in self._by_site.get(site, {}):
            return False
        return self._raise(Condition(site, gateway_id, GATEWAY_SOURCE, RECORDS_MISSING, now_ms,
                                     0, colour, text))

    def missing_records(self) -> set[str]:
        """Gateways with an active ``records_missing`` condition."""
        return {c.gateway_id for active in self._by_site.values() for c in active.values()
                if c.kind == RECORDS_MISSING}

    def _superseded(self, key: tuple[str, str, str], epoch: int | None, seq: int) -> bool:
        """Whether record ``(epoch, seq)`` of condition ``key`` is older than the last one
        applied (then it is ignored); else it becomes the last one. Seqs compare within one
        store epoch; a record of another epoch is newer: the gateway's store was replaced and
        its seqs start again (docs/wire-protocol.md, "Epochs"), and its first fire alarm must
        not be taken for an old record. Without an epoch on one side (a condition loaded from
        the registry) seqs compare: that can only keep a condition active, never hide one."""
        last, last_epoch = self._last_seq.get(key), self._last_epoch.get(key)
        if (last is not None and last > seq
                and (epoch is None or last_epoch is None or epoch == last_epoch)):
            return True
        self._last_seq[key], self._last_epoch[key] = seq, epoch
        return False

    def _reset(self, site: str, gateway_id: str, reset: Event, epoch: int | None = None
               ) -> bool:
        # "panel/1-1/system" resets everything under "panel/1-1/"; a source without two
        # levels resets the whole gateway.
        prefix = reset_prefix(reset.source.id)
        changed = False
        for key, c in list(self._by_site.get(site, {}).items()):
            if (c.gateway_id == gateway_id and c.kind in self.rules.reset_clears
                    and c.source_id.startswith(prefix)
                    and self._raised_by(c, reset, epoch, same_clock=bool(prefix))):
                # No _last_seq mark: a record of this condition arriving after the reset is
                # applied (its panel time may be later than the reset's): red on the safe side.
                changed |= self._clear(site, key)
        return changed

    def _raised_by(self, c: Condition, reset: Event, epoch: int | None, *,
                   same_clock: bool) -> bool:
        """Whether ``c`` was raised at or before ``reset`` (so the reset clears it), by record
        time: the panel's own clock when both records carry one and come from the same panel
        (``same_clock``), else the gateway's receive time. At the same time (panel time labels
        have one-second steps) the arrival order decides: a condition raised by a record that
        came after the reset stays, on the safe side (so does one of another store epoch,
        whose seqs do not compare)."""
        order = compare_record_times(*_latest(c), reset.receive_ms, reset.source_ms,
                                     same_clock=same_clock)
        if order != 0:
            return order < 0
        last_epoch = self._last_epoch.get(c.key)
        if epoch is not None and last_epoch is not None and epoch != last_epoch:
            return False
        return self._last_seq.get(c.key, c.seq) < reset.seq

    def _raise(self, c: Condition) -> bool:
        active = self._by_site.setdefault(c.site, {})
        old = active.get(c.key)
        if old is not None and old.colour == c.colour:
            # Raised again while active: keep the first time and record, but remember when
            # (for a reset that arrives later: _raised_by), and persist that.
            if compare_record_times(*_latest(old), *_latest(c), same_clock=True) < 0:
                active[c.key] = self.raised[c.key] = replace(
                    old, raised_ms=c.raised_ms, raised_source_ms=c.raised_source_ms)
            return False
        active[c.key] = c
        self.raised[c.key] = c
        self.cleared.pop(c.key, None)
        return True

    def _clear(self, site: str, key: tuple[str, str, str]) -> bool:
        active = self._by_site.get(site)
        if not active or key not in active:
            return False
        c = active.pop(key)
        if not active:
            del self._by_site[site]
        self.cleared[key] = c
        self.raised.pop(key, None)
        return True

    # -- outputs -----------------------------------------------------------------------------

    def take_changes(self) -> tuple[list[Condition], list[Condition]]:
        """Conditions raised and cleared since the last call (for persistence)."""
        raised, cleared = list(self.raised.values()), list(self.cleared.values())
        self.raised.clear()
        self.cleared.clear()
        return raised, cleared

    def assess(self, site: str) -> Assessment:
        """The colour of ``site`` now, with up to 20 reasons, most severe and oldest first."""
        active = sorted(self._by_site.get(site, {}).values(),
                        key=lambda c: (-c.colour.rank, c.since_ms, c.key))
        colour = active[0].colour if active else Colour.GREEN
        return Assessment(site, colour, tuple(c.reason() for c in active[:MAX_REASONS]))

    def conditions(self, site: str | None = None) -> list[Condition]:
        if site is not None:
            return list(self._by_site.get(site, {}).values())
        return [c for active in self._by_site.values() for c in active.values()]

    def sites(self) -> list[str]:
        return sorted(self._by_site)
