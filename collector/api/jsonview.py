"""The JSON shape of an alarm on the API and the stream: :meth:`Alarm.to_json`'s fields, made
without ``dataclasses.asdict`` (which deep-copies every value; every field here is a scalar).
A list of 500 alarms is serialized several times faster (bench/bench_api.py)."""

from __future__ import annotations

from collector.alarms.model import Alarm

__all__ = ["alarm_json"]

_FIELDS = tuple(Alarm.__dataclass_fields__)


def alarm_json(alarm: Alarm) -> dict[str, object]:
    """Every field of ``alarm`` by name, plus ``open`` (equal to ``alarm.to_json()``)."""
    out: dict[str, object] = {f: getattr(alarm, f) for f in _FIELDS}
    out["open"] = alarm.open
    return out
