"""Answers to the centre's reads (GB/T 26875.3 §8.3.2, 图31-图43), and per-object time labels.

Pure functions of the :class:`~simulators.panel.model.PanelModel`, the dialect profile and the
panel clock's current label. A read (61-88) is answered with the matching upload type
(:data:`~protocols.gb26875.RESPONSE_TYPE`, §5); systems and components the panel does not have are
left out, and ``None`` says nothing that was asked for exists (the engine then denies the read).
Records (64, 84) may legitimately be an empty answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from protocols.gb26875 import (
    RESPONSE_TYPE,
    SPECS,
    ApplicationData,
    ComponentRef,
    InfoObject,
    Profile,
    ReadOperations,
    ReadUitdOperations,
    SystemRef,
    TimeLabel,
)
from protocols.gb26875.constants import TIME_LABEL_LEN

from .model import PanelModel


def stamp(profile: Profile, type_mark: int, objects: Sequence[InfoObject],
          now: TimeLabel) -> tuple[InfoObject, ...]:
    """Per-object time labels as the profile has them: present (keeping an object's own time,
    else ``now``), absent (``no-time-labels``), or extra (``extra-time-labels``)."""
    spec = SPECS[type_mark]
    has = profile.has_time_label(type_mark, spec.time_label)
    out = []
    for obj in objects:
        if not hasattr(obj, "time"):  # downstream objects (never uploaded) have none
            out.append(obj)
            continue
        current: TimeLabel | None = getattr(obj, "time", None)
        stamped: InfoObject = replace(cast(Any, obj), time=(current or now) if has else None)
        out.append(stamped)
    return tuple(out)


def fit(profile: Profile, type_mark: int, objects: Sequence[InfoObject],
        now: TimeLabel) -> ApplicationData:
    """As many objects as the type's maximum count and the profile's ADU limit allow (a
    Hikvision-style 512-byte ADU holds 11 component states, not 22)."""
    stamped = stamp(profile, type_mark, objects, now)
    size, keep = 2, 0
    for obj in stamped[:SPECS[type_mark].max_count]:
        size += len(obj.encode_body()) + (TIME_LABEL_LEN if getattr(obj, "time", None) else 0)
        if size > profile.max_adu:
            break
        keep += 1
    return ApplicationData(type_mark, stamped[:keep])


def answer_read(model: PanelModel, profile: Profile, adu: ApplicationData,
                now: TimeLabel) -> ApplicationData | None:
    """The response ADU to a read, or None when nothing asked for exists."""
    t, objs, m = adu.type_mark, adu.objects, model
    systems = [(o.system_type, o.system_address) for o in objs if isinstance(o, SystemRef)]
    comps = [(o.system_type, o.system_address, o.address.raw) for o in objs
             if isinstance(o, ComponentRef)]
    found: Sequence[InfoObject]
    if t == 61:
        found = m.read_systems(systems)
    elif t == 62:
        found = m.read_components(comps)
    elif t == 63:
        found = m.read_analogs(comps)
    elif t == 64:
        r64 = objs[0]
        assert isinstance(r64, ReadOperations)
        ops = m.read_operations((r64.system_type, r64.system_address), r64.count, r64.start)
        return fit(profile, 4, ops, now)
    elif t == 65:
        found = m.read_versions(systems)
    elif t == 66:
        found = m.read_configs(systems)
    elif t == 67:
        found = m.read_component_configs(comps)
    elif t == 68:
        found = m.read_times(systems, now)
    elif t == 81:
        found = [m.uitd_status(now)]
    elif t == 84:
        r84 = objs[0]
        assert isinstance(r84, ReadUitdOperations)
        return fit(profile, 24, m.read_uitd_operations(r84.count, r84.start), now)
    elif t == 85:
        found = [m.read_uitd_version()]
    elif t == 86:
        found = [m.read_uitd_config()]
    else:  # 88
        found = [m.read_uitd_time(now)]
    return fit(profile, RESPONSE_TYPE[t], found, now) if found else None
