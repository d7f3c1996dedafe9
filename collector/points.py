"""Records and gateway messages as storage points: the collector's schema, as pure functions.

A :class:`Point` is what every sink stores: a measurement, low-cardinality tags (sorted by
key), typed fields and a time in nanoseconds. The schema - which measurement, which tags,
which fields - is documented in ``docs/collector-storage.md``; this module is its only
implementation, and ``tests/data/lineproto/`` holds golden cases for it.

**Idempotent time.** A record's point time is ``receive_ms * 1_000_000 + seq % 1_000_000``
nanoseconds. InfluxDB (and the SQLite store) keeps one point per (measurement, tags, time),
so a redelivered record - same seq, same receive time - overwrites itself instead of being
stored twice, while two records of one series received in the same millisecond (different
seqs) keep distinct times. The same idea gives status and gap points stable times.

Nothing here does I/O; every function is deterministic in its arguments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NewType, TypeAlias

from collector.ledger import Reset
from protocols.wire import (
    LWT_REASON,
    Batch,
    Event,
    GatewayState,
    Health,
    LinkState,
    Measurement,
    Priority,
    Record,
    Source,
    Status,
)

__all__ = [
    "DEFAULT_MAX_HEALTH_COUNTERS",
    "DEFAULT_MAX_HEALTH_LINKS",
    "GAP",
    "GATEWAY",
    "HEALTH",
    "HEALTH_COUNTER",
    "HEALTH_LINK",
    "MAX_TIME_MS",
    "RECORD_EVENT",
    "RECORD_VALUE",
    "RESET",
    "RISK",
    "RISK_LEVELS",
    "FieldValue",
    "Line",
    "Point",
    "Storable",
    "is_plain_reading",
    "point_for_gap",
    "point_for_record",
    "point_for_reset",
    "point_for_risk",
    "points_for_batch",
    "points_for_health",
    "points_for_status",
    "record_time_ns",
]

FieldValue: TypeAlias = str | int | float | bool

# Measurement names (the schema table in docs/collector-storage.md).
RECORD_EVENT = "fg_event"
RECORD_VALUE = "fg_value"
HEALTH = "fg_health"
HEALTH_COUNTER = "fg_counter"
HEALTH_LINK = "fg_link"
GATEWAY = "fg_gateway"
RISK = "fg_risk"
GAP = "fg_gap"
RESET = "fg_reset"

DEFAULT_MAX_HEALTH_COUNTERS = 256
DEFAULT_MAX_HEALTH_LINKS = 64
"""Series per health message (``[collector] max_health_counters`` / ``max_health_links``).
A gateway reports a handful of drivers, reasons and links, named by its config; the wire lets
one 128 KiB message carry thousands (16,001 new series from one message, issue 14), and every
new tag value is a series the database keeps in memory."""

RISK_LEVELS = {"green": 0, "yellow": 1, "red": 2}
"""The three colours of the fire big-data plans (三色预警) and a number to graph them by."""

_NS = 1_000_000
_SUB_MS = 1_000_000  # the ns part of a record time that comes from its seq
MAX_TIME_MS = (2**63 - 1 - (_SUB_MS - 1)) // _NS
"""The last millisecond whose nanosecond times fit InfluxDB's int64 (2262-04-11). The wire
allows times up to 2**53-1 ms; a gateway with a wildly wrong clock is clamped to this, and
the true time is kept in a ``receive_ms`` field, rather than losing the whole write."""

_PRIORITY_INT = {p: int(p) for p in Priority}

Line = NewType("Line", str)
"""A point already written as one line of line protocol (:func:`collector.lineproto.to_line`,
no newline). Only a sink whose ``renders_lines`` is true takes them: the decode thread then
renders record points straight to lines (``lines_for_batch``), which spares the writer
thread - the collector's bottleneck - the Point objects and their formatting."""


@dataclass(frozen=True, slots=True)
class Point:
    """One stored point. ``tags`` are sorted by key and low-cardinality only."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue], ...]
    time_ns: int

    def tag(self, key: str) -> str | None:
        """The value of tag ``key``, or None."""
        for k, v in self.tags:
            if k == key:
                return v
        return None

    def field(self, key: str) -> FieldValue | None:
        """The value of field ``key``, or None."""
        for k, v in self.fields:
            if k == key:
                return v
        return None


Storable: TypeAlias = Point | Line
"""What a sink's ``write`` takes."""


# Construction speed: a frozen dataclass stores each field through object.__setattr__, which
# costs more than the rest of the mapping. As in protocols/wire/records.py, a plain twin with
# the same slots is filled and then switched to Point (CPython allows __class__ assignment
# between layout-identical classes); nobody sees it thawed.
_ThawedPoint = type("_ThawedPoint", (), {"__slots__": Point.__slots__})


def _point(measurement: str, tags: tuple[tuple[str, str], ...],
           fields: tuple[tuple[str, FieldValue], ...], time_ns: int) -> Point:
    p: Any = _ThawedPoint()
    p.measurement, p.tags, p.fields, p.time_ns = measurement, tags, fields, time_ns
    p.__class__ = Point
    return p  # type: ignore[no-any-return]


# The same tag tuples again and again (a gateway's sources): build each once. Sharing the
# tuple also lets lineproto reuse its escaped form. Bounded; cleared when full.
_TAGS_MAX = 32_768  # ~0.5 KB an entry: ~16 MB at most
_TagKey: TypeAlias = tuple[str, str | None, str, str, str]  # gateway, site, source, bus, kind
_event_tags: dict[_TagKey, tuple[tuple[str, str], ...]] = {}
_value_tags: dict[_TagKey, tuple[tuple[str, str], ...]] = {}


def record_time_ns(receive_ms: int, seq: int) -> int:
    """The idempotent point time of a record (see the module docstring)."""
    return min(receive_ms, MAX_TIME_MS) * _NS + seq % _SUB_MS


def _ms_ns(ms: int, sub: int = 0) -> int:
    return min(ms, MAX_TIME_MS) * _NS + sub % _SUB_MS


def _source_fields(src: Source, out: list[tuple[str, FieldValue]]) -> None:
    # GB/T 26875.3 addressing (system type/address: 1 byte, component type: 1 byte, component
    # address: 4 bytes). Fields, not tags: the component address alone can take 2**32
    # values, and the source id already names the component.
    if src.description is not None:
        out.append(("description", src.description))
    if src.system_type is not None:
        out.append(("sys_type", src.system_type))
    if src.system_address is not None:
        out.append(("sys_addr", src.system_address))
    if src.component_type is not None:
        out.append(("comp_type", src.component_type))
    if src.component_address is not None:
        out.append(("comp_addr", src.component_address))


def _event_point(gateway: str, site: str | None, e: Event) -> Point:
    src = e.source
    # _value_: the member's plain string (hash cached), not Enum.__hash__ / .value (slow).
    key = (gateway, site, src.id, src.bus._value_, e.type._value_)
    tags = _event_tags.get(key)
    if tags is None:
        if site is None:
            tags = (("bus", key[3]), ("gateway", gateway), ("source", src.id), ("type", key[4]))
        else:
            tags = (("bus", key[3]), ("gateway", gateway), ("site", site), ("source", src.id),
                    ("type", key[4]))
        if len(_event_tags) >= _TAGS_MAX:
            _event_tags.clear()
        _event_tags[key] = tags
    fields: list[tuple[str, FieldValue]] = [
        ("active", e.active), ("priority", _PRIORITY_INT[e.priority]), ("seq", e.seq)]
    if e.source_ms is not None:
        fields.append(("source_ms", e.source_ms))
    if e.state is not None:
        fields.append(("state", e.state))
    if e.operations:
        fields.append(("operations", ",".join(e.operations)))
    if e.operator is not None:
        fields.append(("operator", e.operator))
    if e.value is not None:
        fields.append(("value", e.value))
    if e.limit is not None:
        fields.append(("limit", e.limit))
    if e.detail is not None:
        fields.append(("detail", e.detail))
    _source_fields(src, fields)
    if e.receive_ms > MAX_TIME_MS:
        fields.append(("receive_ms", e.receive_ms))
    return _point(RECORD_EVENT, tags, tuple(fields), record_time_ns(e.receive_ms, e.seq))


def is_plain_reading(m: Measurement) -> bool:
    """A reading whose point has only the four fields value, unit, priority and seq: no
    source time, no GB/T 26875.3 addressing or description, a time that needs no clamping.
    Nearly every record of a busy stream; ``lineproto.lines_for_batch`` writes these in one
    step."""
    src = m.source
    return (m.source_ms is None and m.receive_ms <= MAX_TIME_MS and src.description is None
            and src.system_type is None and src.system_address is None
            and src.component_type is None and src.component_address is None)


def _value_point(gateway: str, site: str | None, m: Measurement) -> Point:
    src = m.source
    key = (gateway, site, src.id, src.bus._value_, m.quantity._value_)
    tags = _value_tags.get(key)
    if tags is None:
        if site is None:
            tags = (("bus", key[3]), ("gateway", gateway), ("quantity", key[4]),
                    ("source", src.id))
        else:
            tags = (("bus", key[3]), ("gateway", gateway), ("quantity", key[4]),
                    ("site", site), ("source", src.id))
        if len(_value_tags) >= _TAGS_MAX:
            _value_tags.clear()
        _value_tags[key] = tags
    if is_plain_reading(m):
        # The common case, a plain sensor reading: no optional field to add.
        return _point(RECORD_VALUE, tags, (("value", m.value), ("unit", m.unit),
                                           ("priority", _PRIORITY_INT[m.priority]),
                                           ("seq", m.seq)),
                      m.receive_ms * _NS + m.seq % _SUB_MS)
    fields: list[tuple[str, FieldValue]] = [
        ("value", m.value), ("unit", m.unit), ("priority", _PRIORITY_INT[m.priority]),
        ("seq", m.seq)]
    if m.source_ms is not None:
        fields.append(("source_ms", m.source_ms))
    _source_fields(src, fields)
    if m.receive_ms > MAX_TIME_MS:
        fields.append(("receive_ms", m.receive_ms))
    return _point(RECORD_VALUE, tags, tuple(fields), record_time_ns(m.receive_ms, m.seq))


def points_for_batch(batch: Batch) -> list[Point]:
    """One point per record: events to ``fg_event``, measurements to ``fg_value``."""
    gw, site = batch.gateway_id, batch.site
    out: list[Point] = []
    append = out.append
    for r in batch.records:
        if r.__class__ is Measurement:
            append(_value_point(gw, site, r))
        else:  # the record model has exactly two classes, both @final
            append(_event_point(gw, site, r))  # type: ignore[arg-type]
    return out


def point_for_record(gateway: str, site: str | None, record: Record) -> Point:
    """The point of one record: what :func:`points_for_batch` makes for it."""
    if record.__class__ is Measurement:
        return _value_point(gateway, site, record)
    return _event_point(gateway, site, record)  # type: ignore[arg-type]


def _gateway_tags(gateway: str, site: str | None, *extra: tuple[str, str]
                  ) -> tuple[tuple[str, str], ...]:
    tags = [("gateway", gateway), *extra]
    if site is not None:
        tags.append(("site", site))
    tags.sort()
    return tuple(tags)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _name_tag(name: str) -> str:
    # Driver, reason and link names are free text from the gateway's config (wire: 1-64
    # chars). A control character has no line-protocol form in a tag; replacing it keeps the
    # rest of the health message storable instead of refusing all of it.
    return _CONTROL.sub("\ufffd", name) if _CONTROL.search(name) else name


def points_for_health(health: Health, site: str | None, *,
                      max_counters: int = DEFAULT_MAX_HEALTH_COUNTERS,
                      max_links: int = DEFAULT_MAX_HEALTH_LINKS) -> list[Point]:
    """``fg_health`` (one point), plus ``fg_counter`` per driver and reason and ``fg_link``
    per link, all at the gateway's ``ts``. ``site`` comes from the gateway's status.
    Control characters in driver, reason and link names become U+FFFD.

    At most ``max_counters`` ``fg_counter`` and ``max_links`` ``fg_link`` points: the first
    in sorted (driver, reason) and link order, so the same message always keeps the same
    series. What is left out is counted on the ``fg_health`` point as ``counters_cut`` /
    ``links_cut`` (only when not 0); ``links_up`` / ``links_down`` still count every link."""
    t = _ms_ns(health.ts_ms)
    gw = health.gateway_id
    links = health.links
    counters = health.counters
    up = sum(1 for s in links.values() if s is LinkState.UP)
    counters_cut = max(0, sum(len(r) for r in counters.values()) - max_counters)
    links_cut = max(0, len(links) - max_links)
    fields: list[tuple[str, FieldValue]] = [
        ("uptime_s", health.uptime_s), ("version", health.version),
        ("outbox_depth", health.outbox_depth)]
    if health.outbox_oldest_s is not None:
        fields.append(("outbox_oldest_s", health.outbox_oldest_s))
    # All four classes always, absent meaning 0: the counters are cumulative, and a graph
    # of evictions must not show holes where a gateway left a zero out.
    for p in Priority:
        fields.append((f"evicted_{p.label}", health.evicted.get(p.label, 0)))
    fields += [("links_up", up), ("links_down", len(links) - up)]
    if health.cpu_percent is not None:
        fields.append(("cpu_percent", health.cpu_percent))
    if health.mem_rss_bytes is not None:
        fields.append(("mem_rss_bytes", health.mem_rss_bytes))
    if health.disk_free_bytes is not None:
        fields.append(("disk_free_bytes", health.disk_free_bytes))
    fields.append(("last_seq", health.last_seq))
    if counters_cut:
        fields.append(("counters_cut", counters_cut))
    if links_cut:
        fields.append(("links_cut", links_cut))
    out = [Point(HEALTH, _gateway_tags(gw, site), tuple(fields), t)]
    room = max_counters
    for driver in sorted(counters):
        if room <= 0:
            break
        per_reason = counters[driver]
        for reason in sorted(per_reason)[:room]:
            tags = _gateway_tags(gw, site, ("driver", _name_tag(driver)),
                                 ("reason", _name_tag(reason)))
            out.append(Point(HEALTH_COUNTER, tags, (("count", per_reason[reason]),), t))
        room -= len(per_reason)
    for link in sorted(links)[:max_links]:
        tags = _gateway_tags(gw, site, ("link", _name_tag(link)))
        out.append(Point(HEALTH_LINK, tags, (("up", links[link] is LinkState.UP),), t))
    return out


def points_for_status(status: Status, *, received_ms: int | None = None) -> list[Point]:
    """One ``fg_gateway`` point for a status (online/offline) message.

    A last will carries the time it was *registered* (the connect time), so when the
    collector passes ``received_ms`` the will is stored at that time instead. An offline
    point gets 1 ns added, so the will and the online status of the same connect (same
    ``ts``) never overwrite each other; a retained status delivered again overwrites itself.
    """
    offline = status.state is GatewayState.OFFLINE
    ms = status.ts_ms
    if offline and status.reason == LWT_REASON and received_ms is not None:
        ms = received_ms
    fields: list[tuple[str, FieldValue]] = [
        ("online", not offline), ("state", status.state.value), ("status_ms", status.ts_ms)]
    if status.version is not None:
        fields.append(("version", status.version))
    if status.reason is not None:
        fields.append(("reason", status.reason))
    point = Point(GATEWAY, _gateway_tags(status.gateway_id, status.site), tuple(fields),
                  _ms_ns(ms, int(offline)))
    return [point]


def point_for_risk(site: str, colour: str, reasons: Sequence[str], time_ms: int) -> Point:
    """A site's colour (``green``/``yellow``/``red``) with the reasons that set it."""
    try:
        level = RISK_LEVELS[colour]
    except KeyError:
        raise ValueError(f"risk colour {colour!r} is not one of {list(RISK_LEVELS)}") from None
    if isinstance(reasons, str):  # a bare string is a Sequence[str] too; refuse the mix-up
        raise TypeError("reasons must be a sequence of strings, not one string")
    fields: tuple[tuple[str, FieldValue], ...] = (
        ("colour", colour), ("level", level), ("reasons", "; ".join(reasons)),
        ("reason_count", len(reasons)))
    return Point(RISK, (("site", site),), fields, _ms_ns(time_ms))


def point_for_gap(gateway_id: str, first: int, last: int, time_ms: int) -> Point:
    """A detected range of missing seqs ``first..last`` (inclusive) of one gateway.

    The time is ``time_ms`` plus ``first`` in the sub-millisecond part, so two gaps found in
    the same millisecond are two points and the same gap reported again is one.
    """
    if not 1 <= first <= last:
        raise ValueError(f"a gap needs 1 <= first <= last, got {first}..{last}")
    fields: tuple[tuple[str, FieldValue], ...] = (
        ("first", first), ("last", last), ("missing", last - first + 1))
    return Point(GAP, (("gateway", gateway_id),), fields, _ms_ns(time_ms, first))


def point_for_reset(reset: Reset, site: str | None) -> Point:
    """A gateway that began a new epoch (its store is new), with the old epoch's final
    state: the highest seq it reached and how many of its records were never stored.
    Epochs are written as their 16 hex digits, as on the wire."""
    fields: tuple[tuple[str, FieldValue], ...] = (
        ("old_epoch", f"{reset.old_epoch:016x}"), ("new_epoch", f"{reset.new_epoch:016x}"),
        ("old_highest", reset.old_highest), ("old_missing", reset.old_missing))
    return Point(RESET, _gateway_tags(reset.gateway_id, site), fields, _ms_ns(reset.at_ms))
