"""State-read planning of the panel driver (edge/drivers/panel_reads.py): which systems and
components are read, and how they are cut into request frames (图31, 图32, 图39)."""

from __future__ import annotations

from edge.config.panel import ComponentKey, PanelConfig
from edge.drivers.panel_reads import (
    COMPONENTS_PER_FRAME,
    SYSTEMS_PER_FRAME,
    ReadTargets,
    read_requests,
    read_targets,
)
from protocols.gb26875 import (
    ApplicationData,
    ComponentAddress,
    ComponentRef,
    ComponentState,
    ComponentStatus,
    Reserved,
    SystemRef,
    encode_adu,
)
from protocols.panel_records import PanelMapper

RT = 1_714_521_601_234


def seen_component(mapper: PanelMapper, system: int, component_type: int, address: int,
                   state: ComponentState) -> None:
    adu = ApplicationData(2, (ComponentStatus(1, system, component_type,
                                              ComponentAddress.from_int(address), state, "",
                                              None),))
    mapper.commit(mapper.map(adu, RT))


def test_frames_hold_at_most_102_systems_and_22_components() -> None:
    targets = ReadTargets([(1, n) for n in range(SYSTEMS_PER_FRAME + 1)],
                          [(1, 1, n) for n in range(2 * COMPONENTS_PER_FRAME + 1)], True)
    reads = read_requests(targets)
    assert [(what, adu.type_mark, len(adu.objects)) for what, adu in reads] == [
        ("systems", 61, 102), ("systems", 61, 1),
        ("components", 62, 22), ("components", 62, 22), ("components", 62, 1),
        ("uitd", 81, 1)]
    assert reads[1][1].objects == (SystemRef(1, 102),)
    assert reads[4][1].objects == (ComponentRef(1, 1, ComponentAddress.from_int(44)),)
    assert reads[5][1].objects == (Reserved(),)
    for _, adu in reads:  # every planned frame is one the codec encodes
        assert encode_adu(adu)


def test_nothing_to_read_is_false_and_plans_no_frame() -> None:
    empty = ReadTargets([], [], False)
    assert not empty and read_requests(empty) == []
    assert ReadTargets([], [], True)


def test_everything_known_is_read_without_a_prefix() -> None:
    mapper = PanelMapper("panel", "panel/com1/uitd", previous={
        "panel/1-3/system": ["fault"], "panel/1-1/7-0x00000063": ["fire_alarm"]})
    seen_component(mapper, 2, 42, 3001, ComponentState.FIRE_ALARM)
    seen_component(mapper, 2, 42, 3002, ComponentState.NORMAL)  # quiet: not read again
    config = PanelConfig("com1", port="/dev/null", systems=((1, 1),),
                         components=(ComponentKey(1, 1, 5),))
    targets = read_targets(mapper, config, None)
    assert targets.systems == [(1, 1), (1, 2), (1, 3)]
    assert targets.components == [(1, 1, 5), (1, 2, 3001), (1, 1, 99)]
    assert targets.uitd


def test_a_prefix_chooses_sources_by_whole_segments() -> None:
    mapper = PanelMapper("panel", "panel/com1/uitd")
    seen_component(mapper, 1, 42, 3001, ComponentState.FIRE_ALARM)
    config = PanelConfig("com1", port="/dev/null", systems=((1, 1), (1, 10)),
                         components=(ComponentKey(1, 1, 5),))
    one = read_targets(mapper, config, "panel/1-1")
    assert (one.systems, one.components, one.uitd) == ([(1, 1)], [(1, 1, 5), (1, 1, 3001)],
                                                       False)
    # A configured component never seen has no type yet: only a prefix above it matches.
    smoke = read_targets(mapper, config, "panel/1-1/42-0x00000bb9/")
    assert (smoke.systems, smoke.components, smoke.uitd) == ([], [(1, 1, 3001)], False)
    uitd = read_targets(mapper, config, "panel/com1/uitd")
    assert (uitd.systems, uitd.components, uitd.uitd) == ([], [], True)
    assert not read_targets(mapper, config, "panel/1-")  # not a whole segment
    assert not read_targets(mapper, config, "other")
