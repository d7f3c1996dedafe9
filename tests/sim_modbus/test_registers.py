"""protocols.registers: layouts, scaling, status words, read plans, purity."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from protocols.registers import (
    CANONICAL_UNIT,
    PROFILES,
    DataType,
    DeviceProfile,
    PointSpec,
    Quantity,
    ReadBlock,
    RegisterError,
    RegisterType,
    StatusWord,
    Unit,
    WordOrder,
    convert,
    get_profile,
    pack_raw,
    unpack_raw,
)

PYMODBUS_TYPE = {
    DataType.U16: ModbusClientMixin.DATATYPE.UINT16,
    DataType.I16: ModbusClientMixin.DATATYPE.INT16,
    DataType.U32: ModbusClientMixin.DATATYPE.UINT32,
    DataType.I32: ModbusClientMixin.DATATYPE.INT32,
    DataType.F32: ModbusClientMixin.DATATYPE.FLOAT32,
}
LIMITS = {DataType.U16: (0, 0xFFFF), DataType.I16: (-0x8000, 0x7FFF),
          DataType.U32: (0, 0xFFFF_FFFF), DataType.I32: (-0x8000_0000, 0x7FFF_FFFF)}


def raw_values(data_type: DataType) -> st.SearchStrategy[int | float]:
    if data_type is DataType.F32:
        return st.floats(width=32, allow_nan=False)
    low, high = LIMITS[data_type]
    return st.integers(low, high)


# --- wire layout -------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "data_type", "order", "registers"), [
    (350, DataType.U16, WordOrder.BIG, [0x015E]),
    (-1, DataType.I16, WordOrder.BIG, [0xFFFF]),
    (-40, DataType.I16, WordOrder.BIG, [0xFFD8]),
    (350_000, DataType.U32, WordOrder.BIG, [0x0005, 0x5730]),
    (350_000, DataType.U32, WordOrder.LITTLE, [0x5730, 0x0005]),
    (-2, DataType.I32, WordOrder.BIG, [0xFFFF, 0xFFFE]),
    (350.0, DataType.F32, WordOrder.BIG, [0x43AF, 0x0000]),
    (350.0, DataType.F32, WordOrder.LITTLE, [0x0000, 0x43AF]),
])
def test_known_layouts(raw: float, data_type: DataType, order: WordOrder,
                       registers: list[int]) -> None:
    assert pack_raw(raw, data_type, order) == registers
    assert unpack_raw(registers, data_type, order) == raw


@pytest.mark.parametrize("order", list(WordOrder))
@pytest.mark.parametrize("data_type", list(DataType))
@given(data=st.data())
def test_agrees_with_pymodbus(data_type: DataType, order: WordOrder, data: st.DataObject) -> None:
    """Our struct layout and pymodbus's converter (used by the simulator) never disagree."""
    raw = data.draw(raw_values(data_type))
    ours = pack_raw(raw, data_type, order)
    theirs = ModbusClientMixin.convert_to_registers(raw, PYMODBUS_TYPE[data_type],
                                                    word_order=order.value)
    assert ours == theirs
    back = ModbusClientMixin.convert_from_registers(ours, PYMODBUS_TYPE[data_type],
                                                    word_order=order.value)
    assert unpack_raw(ours, data_type, order) == back


@pytest.mark.parametrize("data_type", [t for t in DataType if t.is_integer])
def test_integer_range_is_enforced(data_type: DataType) -> None:
    low, high = LIMITS[data_type]
    with pytest.raises(RegisterError, match="outside"):
        pack_raw(high + 1, data_type)
    with pytest.raises(RegisterError, match="outside"):
        pack_raw(low - 1, data_type)
    with pytest.raises(RegisterError, match="integer"):
        pack_raw(1.5, data_type)


def test_unpack_checks_length_and_values() -> None:
    with pytest.raises(RegisterError, match="needs 2 registers"):
        unpack_raw([1], DataType.F32)
    with pytest.raises(RegisterError, match=r"0\.\.65535"):
        unpack_raw([0x10000], DataType.U16)


# --- scaling -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key", sorted(PROFILES))
def test_every_profile_point_round_trips_its_range(key: str) -> None:
    for point in PROFILES[key].points:
        step = (point.maximum - point.minimum) / 37
        for i in range(38):
            value = point.minimum + i * step
            decoded = point.decode(point.encode(value))
            # integer points quantise to one count of the scale
            assert decoded == pytest.approx(value, abs=abs(point.scale) / 2 + 1e-9), point.name


def test_offset_and_negative_raw() -> None:
    level = get_profile("level-cm").primary  # cm above a probe 0.20 m above the floor
    assert level.encode(3.0) == [280]
    assert level.encode(0.1) == [0xFFF6]  # -10 cm: water below the probe
    assert level.decode([0xFFF6]) == pytest.approx(0.1)


def test_saturation_like_a_transmitter() -> None:
    pressure = get_profile("pressure-a").primary
    with pytest.raises(RegisterError, match="does not fit u16"):
        pressure.encode(70.0)
    assert pressure.encode(70.0, saturate=True) == [0xFFFF]
    assert pressure.encode(-1.0, saturate=True) == [0]
    with pytest.raises(RegisterError, match="NaN"):
        pressure.encode(float("nan"), saturate=True)


def test_in_range_and_units() -> None:
    pressure = get_profile("pressure-b").primary
    assert pressure.unit is Unit.KPA and pressure.canonical_unit is Unit.MPA
    assert pressure.in_range(1600.0) and not pressure.in_range(1600.1)
    assert convert(350.0, Unit.KPA, Unit.MPA) == pytest.approx(0.35)
    with pytest.raises(ValueError, match="cannot convert"):
        convert(1.0, Unit.KPA, Unit.METRE)


# --- status words --------------------------------------------------------------------------------

def test_status_word() -> None:
    word = get_profile("elec-fire").status_words[0]
    assert word.encode(["residual_current_alarm", "temperature_fault"]) == [0x0201]
    assert word.decode([0x0201]) == {"residual_current_alarm", "temperature_fault"}
    assert word.decode([0x8000]) == {"bit15"}  # set but unnamed bits are still reported
    with pytest.raises(RegisterError, match="no bit named 'fire'; known: "):
        word.encode(["fire"])


# --- profiles ------------------------------------------------------------------------------------

def test_required_profiles_exist() -> None:
    quantities = {q for p in PROFILES.values() for q in (pt.quantity for pt in p.points)}
    assert quantities == set(CANONICAL_UNIT)  # every quantity a register can carry
    pressure = [p for p in PROFILES.values()
                if p.points and p.primary.quantity is Quantity.PRESSURE]
    assert len({(p.primary.data_type, p.primary.word_order) for p in pressure}) >= 2
    efd = get_profile("elec-fire")
    assert len(efd.points_of(Quantity.TEMPERATURE)) == 4
    assert {p.data_type for p in efd.points_of(Quantity.TEMPERATURE)} == {DataType.I16}


def test_unknown_profile_lists_known() -> None:
    with pytest.raises(KeyError, match="known: di-16, di-8, elec-fire, fire-pump, level, "):
        get_profile("pressure-z")


def test_read_blocks_merge_adjacent_but_not_gaps() -> None:
    assert get_profile("elec-fire").read_blocks() == [ReadBlock(RegisterType.HOLDING, 0, 6)]
    gappy = DeviceProfile("x", "x", "x", points=(
        PointSpec("a", Quantity.LEVEL, Unit.METRE, RegisterType.HOLDING, 0, DataType.U16, 0, 1),
        PointSpec("b", Quantity.LEVEL, Unit.METRE, RegisterType.HOLDING, 2, DataType.F32, 0, 1),
        PointSpec("c", Quantity.LEVEL, Unit.METRE, RegisterType.INPUT, 1, DataType.U16, 0, 1),
    ))
    assert gappy.read_blocks() == [ReadBlock(RegisterType.HOLDING, 0, 1),
                                   ReadBlock(RegisterType.HOLDING, 2, 2),
                                   ReadBlock(RegisterType.INPUT, 1, 1)]
    assert gappy.decode_block(ReadBlock(RegisterType.HOLDING, 2, 2), [0x3F80, 0]) == {"b": 1.0}


def test_profiles_reject_overlaps_and_wrong_units() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        DeviceProfile("x", "x", "x", points=(
            PointSpec("a", Quantity.LEVEL, Unit.METRE, RegisterType.HOLDING, 0, DataType.U32,
                      0, 1),
        ), status_words=(StatusWord("s", RegisterType.HOLDING, 1, {0: "f"}),))
    with pytest.raises(ValueError, match="not a unit of level"):
        PointSpec("a", Quantity.LEVEL, Unit.KPA, RegisterType.HOLDING, 0, DataType.U16, 0, 1)


def test_module_is_pure() -> None:
    """protocols.registers imports nothing that does I/O (checked in a fresh interpreter)."""
    code = ("import sys, protocols.registers; "
            "print(' '.join(m for m in ('asyncio', 'socket', 'serial', 'pymodbus', 'ssl') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
