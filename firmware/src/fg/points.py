# Register values to physical values, as protocols/registers.py does on CPython.
#
# config.json carries each point's PointSpec fields (generated from protocols/registers.py when
# the device is provisioned, so the two cannot drift) plus what the edge driver derives from
# them: the factor to the quantity's canonical unit (kPa -> MPa: 0.001, PointSpec.factor) and
# the decimal places that carry information (PointSpec.decimals). tests/firmware/test_parity.py
# (test_register_values_decode_as_on_the_edge, test_data_types_and_word_orders) decodes every
# built-in profile here and with protocols.registers and compares.
#
# Modbus Application Protocol V1.1b3 §4.2: a register is 16 bits, big-endian on the wire; for
# 32-bit values the word order is the device's choice ("big": high word at the lower address).

import struct
from collections import namedtuple

from micropython import const

U16 = const(0)
I16 = const(1)
U32 = const(2)
I32 = const(3)
F32 = const(4)
TYPES = ("u16", "i16", "u32", "i32", "f32")
WIDTH = (1, 1, 2, 2, 2)


def raw(regs, at, dtype, little):
    """The raw value of a point starting at ``regs[at]``."""
    hi = regs[at]
    if WIDTH[dtype] == 1:
        return hi - 0x10000 if dtype == I16 and hi & 0x8000 else hi
    lo = regs[at + 1]
    if little:
        hi, lo = lo, hi
    if dtype == F32:
        return struct.unpack(">f", struct.pack(">HH", hi, lo))[0]
    v = hi << 16 | lo
    return v - 0x100000000 if dtype == I32 and hi & 0x8000 else v


def tidy(value, decimals):
    """Remove float noise (350 x 0.001 = 0.35000000000000003): round integer points to the
    resolution of scale and offset; an f32 carries ~7 significant digits."""
    if value != value or value in (float("inf"), float("-inf")):
        return value
    if decimals is None or decimals < 0:
        return float("%.7g" % value)
    return round(value, decimals)


# One measured value of a device, from a config.json point: a named tuple (half the memory of
# an object with the same fields). minimum/maximum: plausible range in the device's unit;
# factor: device unit -> canonical unit; code: index into records.QUANTITIES; rule: index into
# config.json "rules" or -1; desc: the device's name (records' source description).
Point = namedtuple("Point", "name block at dtype little scale offset minimum maximum factor "
                   "decimals code unit rule sid desc")


def columns(fields):
    """Column index by name, from config.json's ``modbus.point_fields``."""
    ix = {}
    for i, name in enumerate(fields):
        ix[name] = i
    return ix


def point(row, ix, base, desc):
    """A Point from a config.json point row of the device whose source id is ``base``."""
    name = row[ix["name"]]
    return Point(name, row[ix["block"]], row[ix["at"]], TYPES.index(row[ix["data_type"]]),
                 row[ix["word_order"]] == "little", row[ix["scale"]], row[ix["offset"]],
                 row[ix["minimum"]], row[ix["maximum"]], row[ix["factor"]],
                 row[ix["decimals"]], row[ix["quantity_code"]], row[ix["canonical_unit"]],
                 row[ix["rule"]], base + "/" + name, desc)


def physical(p, regs):
    """The value in the device's unit (``raw * scale + offset``)."""
    return raw(regs, p.at, p.dtype, p.little) * p.scale + p.offset


def canonical(p, value):
    """The value in the quantity's canonical unit, without float noise."""
    return tidy(value * p.factor, p.decimals)
