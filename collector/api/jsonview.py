"""The JSON shape of an alarm on the API and the stream: :meth:`Alarm.to_json`'s fields, made
without ``dataclasses.asdict`` (which deep-copies every value; every field here is a scalar).
A list of 500 alarms is serialized several times faster (bench/bench_api.py)."""

from __future__ import annotations

import json
import threading

from collector.alarms.model import Alarm

__all__ = ["CACHE_BYTES", "CACHE_SIZE", "alarm_bytes", "alarm_json", "alarms_body"]

_FIELDS = tuple(Alarm.__dataclass_fields__)
_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
"""What Starlette's JSONResponse writes (the same options), as a function."""
CACHE_SIZE = 20_000
"""Alarms whose encoded JSON is remembered (~0.5 KB each; emptied when full)."""
CACHE_BYTES = 32 << 20
"""...and at most this many bytes of it (a note or description can be long)."""


class _Encoded:
    """Alarm id -> (the alarm, its encoded JSON), bounded by count and bytes."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[Alarm, bytes]] = {}
        self.bytes = 0  # a replaced entry's bytes count until the next clear
        self.lock = threading.Lock()

    def put(self, alarm: Alarm, data: bytes) -> None:
        with self.lock:
            if len(self.entries) >= CACHE_SIZE or self.bytes + len(data) > CACHE_BYTES:
                self.entries.clear()
                self.bytes = 0
            self.entries[alarm.id] = (alarm, data)
            self.bytes += len(data)


_cache = _Encoded()


def alarm_json(alarm: Alarm) -> dict[str, object]:
    """Every field of ``alarm`` by name, plus ``open`` (equal to ``alarm.to_json()``)."""
    out: dict[str, object] = {f: getattr(alarm, f) for f in _FIELDS}
    out["open"] = alarm.open
    return out


def alarm_bytes(alarm: Alarm) -> bytes:
    """:func:`alarm_json` encoded (UTF-8), remembered per alarm id while the alarm is equal
    (an Alarm is immutable: a change is another object with other values): encoding is most of
    a list's cost (~10 us an alarm), and the same open alarms are listed again and again."""
    hit = _cache.entries.get(alarm.id)
    if hit is not None and (hit[0] is alarm or hit[0] == alarm):
        return hit[1]
    data = _ENCODE(alarm_json(alarm)).encode()
    _cache.put(alarm, data)
    return data


def alarms_body(alarms: list[Alarm], more: dict[str, object]) -> bytes:
    """``{"alarms": [...], **more}`` as JSON bytes, each alarm from :func:`alarm_bytes`."""
    tail = _ENCODE(more)[1:-1]
    return (b'{"alarms":[' + b",".join(alarm_bytes(a) for a in alarms) + b"]"
            + (b"," + tail.encode() if tail else b"") + b"}")
