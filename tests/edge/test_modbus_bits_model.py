"""The contact model of protocols/registers.py: meanings, wiring, the read planner, decoding
and channel assignment, rule by rule, plus a property test of the bit planner."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.registers import (
    MAX_READ_BITS,
    MEANINGS,
    PROFILES,
    BitBlock,
    BitPoint,
    BitTable,
    Channel,
    ChannelBank,
    ChannelError,
    DataType,
    DeviceProfile,
    Meaning,
    PointSpec,
    ReadBlock,
    RegisterError,
    RegisterType,
    get_profile,
)
from protocols.wire import DEFAULT_PRIORITY, EventType, Priority

DI, COIL, HR = BitTable.DISCRETE_INPUT, BitTable.COIL, RegisterType.HOLDING


def contacts(*points: BitPoint, gap: int = 0) -> DeviceProfile:
    return DeviceProfile("t", "t", "t", points=(), bit_points=points, bit_gap=gap)


def test_meanings_table() -> None:
    assert set(MEANINGS) == set(Meaning)
    assert {m: s.event for m, s in MEANINGS.items()} == {
        Meaning.VALVE: EventType.VALVE_OFF_NORMAL, Meaning.RUN: EventType.RUNNING,
        Meaning.FAULT: EventType.FAULT, Meaning.MANUAL: EventType.MANUAL_MODE,
        Meaning.DOOR: EventType.DOOR_OPEN, Meaning.SUPERVISORY: EventType.SUPERVISORY}
    assert DEFAULT_PRIORITY[EventType.VALVE_OFF_NORMAL] is Priority.ALARM
    assert DEFAULT_PRIORITY[EventType.RUNNING] is Priority.EVENT
    # a supply valve is normally open, everything else normally "not asserted"
    assert {m for m, s in MEANINGS.items() if s.normal} == {Meaning.VALVE}
    assert {m for m, s in MEANINGS.items() if not s.normal_fixed} == {Meaning.VALVE}


@pytest.mark.parametrize("invert", [False, True])
def test_invert_and_normal(invert: bool) -> None:
    valve = BitPoint("v", Meaning.VALVE, DI, 0, invert=invert)
    for raw in (False, True):
        state = valve.state(raw)
        assert state is (raw is not invert)
        assert valve.raw(state) is raw
        assert valve.is_abnormal(state) is (not state)  # closed is off-normal
    assert valve.state_name(True) == "open" and valve.state_name(valve.normal_state) == "open"
    drain = BitPoint("d", Meaning.VALVE, DI, 0, normal=False)
    assert drain.is_abnormal(True) and not drain.is_abnormal(False)


def test_register_bits_set_and_get() -> None:
    manual = BitPoint("m", Meaning.MANUAL, HR, 2, bit=2, invert=True)  # an "auto" bit
    assert manual.in_register
    word = manual.set_in(0xFFFF, True)  # manual: the auto bit cleared
    assert word == 0xFFFB and manual.get_from(word) is True
    assert manual.set_in(0, False) == 0b100 and manual.get_from(0b100) is False


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"table": DI, "bit": 3}, "a discrete_input has no bit number"),
    ({"table": HR}, "needs a bit 0..15"),
    ({"table": HR, "bit": 16}, "needs a bit 0..15"),
    ({"table": DI, "address": 65536}, "outside 0..65535"),
    ({"table": DI, "meaning": Meaning.RUN, "normal": True},
     "a run contact is normally stopped; one that reads running at rest is wired the other "
     "way: set invert instead of normal"),
    ({"table": DI, "channel": 0}, "channel numbers start at 1"),
])
def test_bit_point_refusals(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "x", "meaning": Meaning.VALVE, "address": 0} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        BitPoint(**args)  # type: ignore[arg-type]


def test_profile_refusals() -> None:
    pressure = PointSpec("p", get_profile("pressure-a").primary.quantity,
                         get_profile("pressure-a").primary.unit, HR, 2, DataType.U16,
                         minimum=0, maximum=1)
    with pytest.raises(ValueError, match="lies in p"):
        DeviceProfile("t", "t", "t", points=(pressure,),
                      bit_points=(BitPoint("b", Meaning.RUN, HR, 2, bit=0),))
    with pytest.raises(ValueError, match="b overlaps a at holding 2 bit 0"):
        contacts(BitPoint("a", Meaning.RUN, HR, 2, bit=0), BitPoint("b", Meaning.FAULT, HR, 2,
                                                                   bit=0))
    with pytest.raises(ValueError, match="b and a are both channel 1"):
        contacts(BitPoint("a", Meaning.RUN, DI, 0, channel=1),
                 BitPoint("b", Meaning.RUN, DI, 1, channel=1))
    with pytest.raises(ValueError, match="field names must be unique"):
        contacts(BitPoint("a", Meaning.RUN, DI, 0), BitPoint("a", Meaning.RUN, DI, 1))
    with pytest.raises(ValueError, match="at least one point or contact"):
        DeviceProfile("t", "t", "t", points=())
    # the same coil and discrete input address are different tables: no overlap
    both = contacts(BitPoint("a", Meaning.RUN, DI, 0), BitPoint("b", Meaning.RUN, COIL, 0))
    assert [(b.table, b.start) for b in both.bit_blocks()] == [(COIL, 0), (DI, 0)]


def test_planner_merges_adjacent_bridges_only_the_allowed_gap_and_caps_the_span() -> None:
    pts = [BitPoint(f"c{a}", Meaning.SUPERVISORY, DI, a) for a in (0, 1, 2, 5, 9)]
    assert [(b.start, b.count) for b in contacts(*pts).bit_blocks()] == [(0, 3), (5, 1), (9, 1)]
    assert [(b.start, b.count) for b in contacts(*pts, gap=2).bit_blocks()] == [(0, 6), (9, 1)]
    assert [(b.start, b.count) for b in contacts(*pts, gap=3).bit_blocks()] == [(0, 10)]
    assert [(b.start, b.count) for b in contacts(*pts, gap=3).bit_blocks(max_count=6)] == [
        (0, 6), (9, 1)]
    far = contacts(BitPoint("a", Meaning.RUN, DI, 0), BitPoint("b", Meaning.RUN, DI, 2000),
                   gap=1999)
    assert [(b.start, b.count) for b in far.bit_blocks()] == [(0, 1), (2000, 1)]  # 2001 > 2000
    # contacts in registers join the register reads, next to the values (one FC3 read)
    assert get_profile("fire-pump").read_blocks() == [ReadBlock(HR, 0, 3)]
    assert get_profile("fire-pump").bit_blocks() == []


@given(addresses=st.sets(st.integers(0, 5000), min_size=1, max_size=40),
       gap=st.integers(0, 50), max_count=st.integers(1, MAX_READ_BITS))
def test_bit_planner_property(addresses: set[int], gap: int, max_count: int) -> None:
    """Every contact is read exactly once; no block is too long or bridges too wide a gap;
    no two neighbouring blocks could have been one."""
    profile = contacts(*(BitPoint(f"c{a}", Meaning.SUPERVISORY, DI, a) for a in addresses),
                       gap=gap)
    blocks = profile.bit_blocks(max_count=max_count)
    covered = [a for a in sorted(addresses) for b in blocks if b.start <= a < b.start + b.count]
    assert covered == sorted(addresses)
    for b in blocks:
        assert 1 <= b.count <= max_count
        inside = sorted(a for a in addresses if b.start <= a < b.start + b.count)
        assert inside[0] == b.start and inside[-1] == b.start + b.count - 1  # no idle edges
        assert all(y - x - 1 <= gap for x, y in itertools.pairwise(inside))
    for x, y in itertools.pairwise(blocks):
        mergeable = (y.start - (x.start + x.count) <= gap
                     and y.start + y.count - x.start <= max_count)
        assert not mergeable


def test_decode_bits_from_bit_and_register_reads() -> None:
    di8 = get_profile("di-8").with_channels({1: Channel(Meaning.VALVE),
                                             8: Channel(Meaning.RUN, invert=True)})
    block = di8.bit_blocks()[0]
    assert block == BitBlock(DI, 0, 8)
    assert di8.decode_bits(block, [True] + [False] * 7) == {"ch1": True, "ch8": True}
    assert di8.decode_bits(block, [False] * 7 + [True]) == {"ch1": False, "ch8": False}
    with pytest.raises(RegisterError, match="block of 8, got 7"):
        di8.decode_bits(block, [False] * 7)
    pump = get_profile("fire-pump")
    assert pump.decode_bits(ReadBlock(HR, 0, 3), [650, 12, 0b011]) == {
        "run": True, "fault": True, "manual": True}
    assert pump.decode_bits(ReadBlock(HR, 0, 3), [650, 12, 0b100]) == {
        "run": False, "fault": False, "manual": False}
    assert pump.decode_bits(ReadBlock(RegisterType.INPUT, 0, 3), [0, 0, 7]) == {}
    with pytest.raises(RegisterError, match=re.escape("outside 0..65535")):
        pump.decode_bits(ReadBlock(HR, 0, 3), [0, 0, 0x10000])


def test_with_channels() -> None:
    di8 = get_profile("di-8")
    assert di8.channel_numbers == tuple(range(1, 9)) and di8.bit_points == ()
    with pytest.raises(ChannelError, match=re.escape("di-8 has no channel 9; channels: 1..8")):
        di8.with_channels({9: Channel(Meaning.VALVE)})
    with pytest.raises(ChannelError, match="channel 2 of di-8 needs a meaning"):
        di8.with_channels({2: Channel(description="x")})
    pump = get_profile("fire-pump").with_channels({3: Channel(invert=False, description="m"),
                                                   1: Channel(Meaning.SUPERVISORY)})
    run, _fault, manual = pump.bit_points
    assert (run.meaning, run.name, run.bit) == (Meaning.SUPERVISORY, "run", 0)
    assert (manual.invert, manual.description, manual.meaning) == (False, "m", Meaning.MANUAL)
    with pytest.raises(ChannelError, match=re.escape("fire-pump has no channel 4; channels: 1..3")):
        get_profile("fire-pump").with_channels({4: Channel(Meaning.VALVE)})
    # a drain valve's normal position survives a description-only override
    drain = dataclasses.replace(get_profile("valve-4"), bit_points=(
        BitPoint("v", Meaning.VALVE, DI, 0, normal=False, channel=1),))
    assert drain.with_channels({1: Channel(description="x")}).bit_points[0].normal is False
    sparse = dataclasses.replace(drain, bit_points=(
        BitPoint("v", Meaning.VALVE, DI, 0, channel=1), BitPoint("w", Meaning.VALVE, DI, 1,
                                                                 channel=7)))
    with pytest.raises(ChannelError, match="channels: 1, 7"):
        sparse.with_channels({3: Channel(Meaning.VALVE)})


def test_builtin_contact_profiles() -> None:
    for key, count in (("di-8", 8), ("di-16", 16)):
        p = PROFILES[key]
        assert p.bank == ChannelBank(DI, 0, count) and p.bit_gap == count - 1
        with pytest.raises(KeyError, match="measures nothing"):
            _ = p.primary
        full = p.with_channels({n: Channel(Meaning.SUPERVISORY) for n in (1, count)})
        assert full.bit_blocks() == [BitBlock(DI, 0, count)]  # first and last: one request
    valves = PROFILES["valve-4"]
    assert [(b.meaning, b.address, b.channel) for b in valves.bit_points] == [
        (Meaning.VALVE, n - 1, n) for n in range(1, 5)]
    assert valves.bit_blocks() == [BitBlock(DI, 0, 4)]
    pump = PROFILES["fire-pump"]
    assert [(b.name, b.bit, b.invert) for b in pump.bit_points] == [
        ("run", 0, False), ("fault", 1, False), ("manual", 2, True)]
    assert [p.name for p in pump.points] == ["outlet_pressure", "inlet_pressure"]
