"""Where a record comes from: :class:`Source`, shared by events and measurements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, final

from ._checks import (
    UINT8,
    UINT32,
    check_int,
    check_text,
    check_token,
    enum_error,
    set_field,
    thawed_twin,
)
from .codes import Bus

__all__ = ["DESCRIPTION_MAX", "SOURCE_ID_MAX", "Source", "new_source"]

SOURCE_ID_MAX = 128
DESCRIPTION_MAX = 64  # GB/T 26875.3 carries 31 bytes of GB 18030; 64 chars leaves room

# StrEnum members hash and compare like their values: this finds the member for either.
_BUS_OF: Mapping[object, Bus] = {b.value: b for b in Bus}


@final
@dataclass(frozen=True, slots=True, init=False)
class Source:
    """Where a record comes from.

    ``id`` is stable across restarts and unique within a gateway: ``panel/1-1/42-0x00000102``,
    ``modbus/bus1/3/pressure``, ``ble/A4:C1:38:00:00:01``. The panel fields are GB/T 26875.3
    addressing (system type and address: one byte each; component type: one byte; component
    address: four bytes) and are set only for ``Bus.GB26875`` sources.
    """

    id: str
    bus: Bus
    system_type: int | None
    system_address: int | None
    component_type: int | None
    component_address: int | None
    description: str | None
    """Human-readable, e.g. the panel's own component text (``三层东走廊感烟``)."""

    def __init__(
        self,
        id: str,
        bus: Bus | str,
        *,
        system_type: int | None = None,
        system_address: int | None = None,
        component_type: int | None = None,
        component_address: int | None = None,
        description: str | None = None,
    ) -> None:
        set_field(self, "__class__", _ThawedSource)
        _fill_source(
            self,
            id,
            bus,
            system_type,
            system_address,
            component_type,
            component_address,
            description,
        )
        set_field(self, "__class__", Source)


def _fill_source(
    t: Any, id: object, bus: object, sys: object, sa: object, ct: object, ca: object, desc: object
) -> None:
    t.id = check_token("src.id", id, SOURCE_ID_MAX)
    try:
        t.bus = _BUS_OF[bus]
    except (KeyError, TypeError):
        raise enum_error("src.bus", bus, _BUS_OF) from None
    t.system_type = None if sys is None else check_int("src.sys", sys, 0, UINT8)
    t.system_address = None if sa is None else check_int("src.sa", sa, 0, UINT8)
    t.component_type = None if ct is None else check_int("src.ct", ct, 0, UINT8)
    t.component_address = None if ca is None else check_int("src.ca", ca, 0, UINT32)
    t.description = None if desc is None else check_text("src.desc", desc, DESCRIPTION_MAX)


def new_source(
    id: object, bus: object, sys: object, sa: object, ct: object, ca: object, desc: object
) -> Source:
    """Positional fast path of ``Source(...)`` for the decoder; same checks."""
    t = _ThawedSource()
    _fill_source(t, id, bus, sys, sa, ct, ca, desc)
    t.__class__ = Source
    return t  # type: ignore[no-any-return]


_ThawedSource = thawed_twin(Source)
