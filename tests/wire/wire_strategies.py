"""Hypothesis strategies for valid wire objects, and arbitrary JSON values to attack with."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

from protocols.wire import (
    UNITS,
    Bus,
    Command,
    CommandAck,
    CommandName,
    Event,
    EventType,
    GatewayState,
    Health,
    LinkState,
    Measurement,
    Priority,
    Quantity,
    Record,
    Source,
    Status,
)

MAX_SAFE = 2**53 - 1

ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
tokens = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation, min_size=1)
# Any Unicode except lone surrogates (category Cs), which cannot be written as UTF-8.
chars = st.characters(blacklist_categories=("Cs",))
names = st.text(chars, min_size=1, max_size=64)
ms = st.integers(0, MAX_SAFE)
seqs = st.integers(1, MAX_SAFE)
finite = st.floats(allow_nan=False, allow_infinity=False)
uint8 = st.integers(0, 255)


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


sources = st.builds(
    Source,
    tokens.filter(lambda s: len(s) <= 128),
    st.sampled_from(Bus),
    system_type=opt(uint8),
    system_address=opt(uint8),
    component_type=opt(uint8),
    component_address=opt(st.integers(0, 2**32 - 1)),
    description=opt(st.text(chars, max_size=64)),
)

events = st.builds(
    Event,
    seq=seqs,
    receive_ms=ms,
    source=sources,
    type=st.sampled_from(EventType),
    active=st.booleans(),
    priority=opt(st.sampled_from(Priority)),
    source_ms=opt(ms),
    state=opt(st.integers(0, 2**32 - 1)),
    operations=st.lists(st.from_regex(r"\A[a-z][a-z0-9_]{0,31}\Z"), max_size=4).map(tuple),
    operator=opt(st.integers(0, 65535)),
    value=opt(finite),
    limit=opt(finite),
    detail=opt(st.text(chars, max_size=256)),
)


@st.composite
def measurements(draw: st.DrawFn) -> Measurement:
    quantity = draw(st.sampled_from(Quantity))
    allowed = UNITS[quantity]
    # analog has no fixed units: any text of up to 16 characters.
    unit = draw(st.sampled_from(allowed) if allowed else st.text(chars, max_size=16))
    return Measurement(
        seq=draw(seqs),
        receive_ms=draw(ms),
        source=draw(sources),
        quantity=quantity,
        value=draw(finite | st.integers(-(2**60), 2**60)),
        unit=unit,
        priority=draw(st.sampled_from(Priority)),
        source_ms=draw(opt(ms)),
    )


records: st.SearchStrategy[Record] = events | measurements()


def record_lists(min_size: int = 1, max_size: int = 30) -> st.SearchStrategy[list[Record]]:
    return st.lists(records, min_size=min_size, max_size=max_size, unique_by=lambda r: r.seq)


statuses = st.builds(
    Status,
    ids,
    st.sampled_from(GatewayState),
    ms,
    version=opt(st.text(chars, max_size=64)),
    site=opt(ids),
    reason=opt(st.text(chars, max_size=64)),
)

counts = st.integers(0, MAX_SAFE)
healths = st.builds(
    Health,
    gateway_id=ids,
    ts_ms=ms,
    uptime_s=st.floats(0, 1e12),
    version=st.text(chars, max_size=64),
    outbox_depth=counts,
    outbox_oldest_s=opt(st.floats(0, 1e9)),
    evicted=st.dictionaries(st.sampled_from([p.label for p in Priority]), counts),
    counters=st.dictionaries(names, st.dictionaries(names, counts, max_size=3), max_size=3),
    links=st.dictionaries(names, st.sampled_from(LinkState), max_size=3),
    cpu_percent=opt(st.floats(0, 6400)),
    mem_rss_bytes=opt(counts),
    disk_free_bytes=opt(counts),
    last_seq=counts,
)

arg_values = (
    st.booleans() | st.integers(-MAX_SAFE, MAX_SAFE) | finite | st.text(chars, max_size=256)
)
commands = st.builds(
    Command,
    tokens.filter(lambda s: len(s) <= 64),
    st.sampled_from(CommandName),
    ms,
    args=st.dictionaries(tokens.filter(lambda s: len(s) <= 32), arg_values, max_size=4),
    ttl_s=opt(st.integers(1, 2**31 - 1)),
)

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE, MAX_SAFE)
    | finite
    | st.text(chars, max_size=20)
)
result_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=10,
)


@st.composite
def acks(draw: st.DrawFn) -> CommandAck:
    ok = draw(st.booleans())
    return CommandAck(
        draw(tokens.filter(lambda s: len(s) <= 64)),
        ok,
        draw(ms),
        result=draw(opt(st.dictionaries(names, result_values, max_size=3))),
        error=None if ok else draw(st.text(chars, max_size=256)),
    )


# Arbitrary JSON, including what a strict decoder must refuse: NaN, huge numbers, odd keys.
any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
