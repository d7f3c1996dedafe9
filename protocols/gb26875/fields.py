"""Field types shared by the information objects: component addresses and GB 18030 text."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.gb26875.errors import EncodeError

DESCRIPTION_LEN = 31  # 部件说明, 31 bytes (图7, 图12)
TEXT_ENCODING = "gb18030"  # GB 18030-2005; GB 2312 text is a subset


@dataclass(frozen=True, slots=True)
class ComponentAddress:
    """部件地址: four bytes the standard calls a "4-byte binary number" (§8.2.1.2).

    Vendors disagree on its structure, so the raw bytes are kept and several views offered:
    :attr:`value` (uint32 little-endian, what most implementations use) and :attr:`loop` /
    :attr:`point` (two uint16 LE halves, the Hikvision reading).
    """

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 4:
            raise ValueError(f"a component address is 4 bytes, got {len(self.raw)}")

    @classmethod
    def from_int(cls, value: int) -> ComponentAddress:
        """From the uint32 LE view."""
        if not 0 <= value <= 0xFFFFFFFF:
            raise EncodeError(f"component address {value} is not a uint32")
        return cls(value.to_bytes(4, "little"))

    @classmethod
    def from_loop_point(cls, loop: int, point: int) -> ComponentAddress:
        """From loop and point numbers, two uint16 LE halves."""
        if not (0 <= loop <= 0xFFFF and 0 <= point <= 0xFFFF):
            raise EncodeError("loop and point are uint16")
        return cls(loop.to_bytes(2, "little") + point.to_bytes(2, "little"))

    @property
    def value(self) -> int:
        """uint32 little-endian view."""
        return int.from_bytes(self.raw, "little")

    @property
    def loop(self) -> int:
        """First uint16 LE half (loop number in the Hikvision reading)."""
        return self.raw[0] | self.raw[1] << 8

    @property
    def point(self) -> int:
        """Second uint16 LE half (point number in the Hikvision reading)."""
        return self.raw[2] | self.raw[3] << 8

    def __str__(self) -> str:
        return f"0x{self.value:08x}"


def decode_text(raw: bytes) -> str:
    """GB 18030 text cut at the first NUL and trimmed (reference §3.1: padding seen is NULs,
    spaces plus NUL, and text plus NUL plus leftover garbage). Undecodable bytes become U+FFFD.
    """
    nul = raw.find(0)
    if nul >= 0:
        raw = raw[:nul]
    return raw.decode(TEXT_ENCODING, errors="replace").strip()


def encode_text(text: str, raw: bytes | None, size: int | None) -> bytes:
    """Encode ``text``; reuse ``raw`` (the bytes it was decoded from) when it still says the same,
    so a decoded object re-encodes byte for byte. ``size`` pads with NULs to a fixed width."""
    if raw is not None and (size is None or len(raw) == size) and decode_text(raw) == text:
        return raw
    try:
        data = text.encode(TEXT_ENCODING)
    except UnicodeEncodeError as exc:
        raise EncodeError(f"text {text!r} is not encodable in GB 18030: {exc}") from None
    if size is None:
        if len(data) > 255:
            raise EncodeError(f"text of {len(data)} bytes exceeds the 255-byte length field")
        return data
    if len(data) > size:
        raise EncodeError(f"text {text!r} is {len(data)} bytes in GB 18030; the field holds {size}")
    return data + bytes(size - len(data))
