"""The normalized record model: what drivers emit and what the transport carries.

A record is an :class:`Event` (something was raised or cleared) or a :class:`Measurement`
(a value with a unit), both naming their :class:`Source`. Records are immutable and validated
on construction, so a record that exists can always be encoded; a bad value fails in the
driver that produced it, with the wire path of the field in the :class:`WireError`.

Drivers build records before the outbox has numbered them: ``seq=0`` means "unassigned" and
the outbox calls :meth:`Event.with_seq` / :meth:`Measurement.with_seq`. The encoder refuses 0.

The classes write ``__init__`` by hand instead of letting ``dataclass`` generate one plus a
``__post_init__``: the collector builds 100,000 records a second, so the checks run inline in
one pass and the fields are stored cheaply (see ``_checks.thawed_twin``). Enum fields accept the
member or its string value (normalised to the member), which lets the decoder hand JSON
values straight to the constructors: one validation, shared by drivers and the decoder.
The classes are ``@final``: the fast construction relies on their exact slot layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Self, TypeAlias, final

from ._checks import (
    BAD_TYPE,
    BAD_VALUE,
    MAX_SAFE_INT,
    UINT16,
    UINT32,
    check_bool,
    check_float,
    check_int,
    check_ms,
    check_text,
    enum_error,
    fail_int,
    json_type,
    set_field,
    thawed_twin,
)
from .codes import ANALOG_UNIT_MAX, DEFAULT_PRIORITY, UNITS, EventType, Priority, Quantity
from .errors import WireError, WireErrorReason
from .source import Source, new_source

__all__ = ["SEQ_LIMIT", "Event", "Measurement", "Record", "Source", "new_source"]

SEQ_LIMIT = 2**53
"""``seq`` is 1 <= seq < SEQ_LIMIT on the wire; 0 means "not yet assigned" in memory."""

DETAIL_MAX = 256
OPERATIONS_MAX = 16
_OPERATION = re.compile(r"[a-z][a-z0-9_]{0,31}")

# Lookups by wire value. StrEnum members hash and compare like their values, so these find
# a member given either the member or the plain string.
_EVENT_TYPE_OF: dict[object, EventType] = {t.value: t for t in EventType}
_QUANTITY_OF: Mapping[object, Quantity] = {q.value: q for q in Quantity}
_PRIORITY_OF: Mapping[int, Priority] = {p.value: p for p in Priority}
_UNITS = dict(UNITS)  # a plain dict: MappingProxyType adds a call to every look-up
_MEASUREMENT = Priority.MEASUREMENT
_PRIORITIES = tuple(Priority)  # indexed by value: 0..3


def _priority(path: str, value: object) -> Priority:
    if value.__class__ is Priority:
        return value
    if value.__class__ is int and value in _PRIORITY_OF:
        return _PRIORITY_OF[value]
    fail_int(path, value, 0, len(Priority) - 1)


@final
@dataclass(frozen=True, slots=True, init=False)
class Event:
    """Something was raised (``active=True``) or cleared (``active=False``).

    Point events without a "cleared" state (operations, resets, check-post answers) use
    ``active=True``. ``priority`` defaults to :func:`default_priority` of the type.
    """

    seq: int
    receive_ms: int
    """Gateway receive time, ms since the Unix epoch (UTC). Always set."""
    source: Source
    type: EventType
    active: bool
    priority: Priority
    source_ms: int | None
    """The device's own timestamp, when it reports one (panel clocks may be wrong)."""
    state: int | None
    """The raw state word as received (GB/T 26875.3 component or system state), uint32."""
    operations: tuple[str, ...]
    """For ``operation`` events: snake_case operation names, e.g. ``("reset", "silence")``."""
    operator: int | None
    """Operator number from the panel, 0..65535."""
    value: float | None
    limit: float | None
    """For threshold events: the limit that was crossed (``value`` is the reading)."""
    detail: str | None

    def __init__(
        self,
        *,
        source: Source,
        type: EventType | str,
        receive_ms: int,
        active: bool = True,
        seq: int = 0,
        priority: Priority | None = None,
        source_ms: int | None = None,
        state: int | None = None,
        operations: Sequence[str] = (),
        operator: int | None = None,
        value: float | None = None,
        limit: float | None = None,
        detail: str | None = None,
    ) -> None:
        set_field(self, "__class__", _ThawedEvent)
        _fill_event(
            self,
            seq,
            receive_ms,
            source,
            type,
            active,
            priority,
            source_ms,
            state,
            operations,
            operator,
            value,
            limit,
            detail,
        )
        set_field(self, "__class__", Event)

    def with_seq(self, seq: int) -> Self:
        """A copy numbered by the outbox (1 <= seq < 2**53)."""
        return replace(self, seq=seq)


_ThawedEvent = thawed_twin(Event)


def _fill_event(
    t: Any,
    seq: Any,
    receive_ms: Any,
    source: object,
    type: object,
    active: object,
    priority: object,
    source_ms: object,
    state: object,
    operations: Any,
    operator: object,
    value: object,
    limit: object,
    detail: object,
) -> None:
    # Inline checks for the fields every event has; helpers for the optional ones.
    if seq.__class__ is not int or not 0 <= seq < SEQ_LIMIT:
        fail_int("seq", seq, 0, SEQ_LIMIT - 1)
    t.seq = seq
    if receive_ms.__class__ is not int or not 0 <= receive_ms <= MAX_SAFE_INT:
        fail_int("rt", receive_ms, 0, MAX_SAFE_INT)
    t.receive_ms = receive_ms
    if source.__class__ is not Source:
        raise WireError(BAD_TYPE, "src", "expected a Source")
    t.source = source
    try:
        t.type = event_type = _EVENT_TYPE_OF[type]
    except (KeyError, TypeError):
        raise enum_error("ev", type, _EVENT_TYPE_OF) from None
    if active.__class__ is not bool:
        check_bool("on", active)
    t.active = active
    if priority is None:
        t.priority = DEFAULT_PRIORITY[event_type]
    elif priority.__class__ is int and 0 <= priority <= 3:
        t.priority = _PRIORITIES[priority]
    else:
        t.priority = _priority("pr", priority)
    if source_ms is not None and (
        source_ms.__class__ is not int or not 0 <= source_ms <= MAX_SAFE_INT
    ):
        fail_int("st", source_ms, 0, MAX_SAFE_INT)
    t.source_ms = source_ms
    t.state = None if state is None else check_int("sw", state, 0, UINT32)
    t.operations = () if operations == () else _operations(operations)
    t.operator = None if operator is None else check_int("opr", operator, 0, UINT16)
    t.value = None if value is None else check_float("v", value)
    t.limit = None if limit is None else check_float("lim", limit)
    t.detail = None if detail is None else check_text("det", detail, DETAIL_MAX)


def new_event(
    seq: object,
    receive_ms: object,
    source: Source,
    type: object,
    active: object,
    priority: object,
    source_ms: object,
    state: object,
    operations: object,
    operator: object,
    value: object,
    limit: object,
    detail: object,
) -> Event:
    """Positional fast path of ``Event(...)`` for the decoder; same checks."""
    t = _ThawedEvent()
    _fill_event(
        t,
        seq,
        receive_ms,
        source,
        type,
        active,
        priority,
        source_ms,
        state,
        operations,
        operator,
        value,
        limit,
        detail,
    )
    t.__class__ = Event
    return t  # type: ignore[no-any-return]


def _operations(ops: Sequence[str]) -> tuple[str, ...]:
    if ops.__class__ is not tuple and ops.__class__ is not list:
        raise WireError(BAD_TYPE, "ops", f"expected an array, got {json_type(ops)}")
    if len(ops) > OPERATIONS_MAX:
        raise WireError(BAD_VALUE, "ops", f"more than {OPERATIONS_MAX} operations")
    for i, op in enumerate(ops):
        if op.__class__ is not str:
            raise WireError(BAD_TYPE, f"ops[{i}]", f"expected a string, got {json_type(op)}")
        if _OPERATION.fullmatch(op) is None:
            raise WireError(BAD_VALUE, f"ops[{i}]", f"{op[:40]!r} is not snake_case (1-32 chars)")
    return tuple(ops)


@final
@dataclass(frozen=True, slots=True, init=False)
class Measurement:
    """A value with a unit. ``unit`` may be left out when the quantity has only one unit."""

    seq: int
    receive_ms: int
    source: Source
    quantity: Quantity
    value: float
    unit: str
    priority: Priority
    source_ms: int | None

    def __init__(
        self,
        *,
        source: Source,
        quantity: Quantity | str,
        value: float,
        receive_ms: int,
        unit: str | None = None,
        seq: int = 0,
        priority: Priority = Priority.MEASUREMENT,
        source_ms: int | None = None,
    ) -> None:
        set_field(self, "__class__", _ThawedMeasurement)
        _fill_measurement(self, seq, receive_ms, source, quantity, value, unit, priority, source_ms)
        set_field(self, "__class__", Measurement)

    def with_seq(self, seq: int) -> Self:
        """A copy numbered by the outbox (1 <= seq < 2**53)."""
        return replace(self, seq=seq)


_ThawedMeasurement = thawed_twin(Measurement)


def _fill_measurement(
    t: Any,
    seq: Any,
    receive_ms: Any,
    source: object,
    quantity: object,
    value: Any,
    unit: Any,
    priority: object,
    source_ms: object,
) -> None:
    if seq.__class__ is not int or not 0 <= seq < SEQ_LIMIT:
        fail_int("seq", seq, 0, SEQ_LIMIT - 1)
    t.seq = seq
    if receive_ms.__class__ is not int or not 0 <= receive_ms <= MAX_SAFE_INT:
        fail_int("rt", receive_ms, 0, MAX_SAFE_INT)
    t.receive_ms = receive_ms
    if source.__class__ is not Source:
        raise WireError(BAD_TYPE, "src", "expected a Source")
    t.source = source
    try:
        t.quantity = q = _QUANTITY_OF[quantity]
    except (KeyError, TypeError):
        raise enum_error("q", quantity, _QUANTITY_OF) from None
    # value - value is 0.0 for finite floats and NaN for NaN and +-inf.
    if value.__class__ is not float or value - value != 0.0:
        value = check_float("v", value)
    t.value = value
    t.unit = unit if unit in _UNITS[q] else _unit(q, unit)
    t.priority = priority if priority is _MEASUREMENT else _priority("pr", priority)
    t.source_ms = None if source_ms is None else check_ms("st", source_ms)


def new_measurement(
    seq: object,
    receive_ms: object,
    source: Source,
    quantity: object,
    value: object,
    unit: object,
    priority: object,
    source_ms: object,
) -> Measurement:
    """Positional fast path of ``Measurement(...)`` for the decoder; same checks."""
    t = _ThawedMeasurement()
    _fill_measurement(t, seq, receive_ms, source, quantity, value, unit, priority, source_ms)
    t.__class__ = Measurement
    return t  # type: ignore[no-any-return]


def _unit(q: Quantity, unit: object) -> str:
    allowed = UNITS[q]
    if unit in allowed:  # the hot path: one tuple scan of at most three strings
        return unit
    if unit is None:
        if len(allowed) == 1:
            return allowed[0]
        raise WireError(
            WireErrorReason.MISSING_FIELD, "u", f"{q.value} needs a unit: one of {list(allowed)}"
        )
    if q is Quantity.ANALOG:
        return check_text("u", unit, ANALOG_UNIT_MAX)
    if unit.__class__ is not str:
        raise WireError(BAD_TYPE, "u", f"expected a string, got {json_type(unit)}")
    raise WireError(
        BAD_VALUE, "u", f"unit {unit[:20]!r} is not allowed for {q.value}: {list(allowed)}"
    )


Record: TypeAlias = Event | Measurement
"""What drivers emit and batches carry."""
