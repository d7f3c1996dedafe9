"""The alarm list's body: encoded alarms are remembered, and the bytes are what Starlette's
JSONResponse would write for the same document, before and after an alarm changes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from starlette.responses import JSONResponse

from collector.alarms.book import AlarmBook, Signal
from collector.api import jsonview
from collector.api.jsonview import alarm_json, alarms_body

HOSTILE = '三层东走廊 "quoted" \\ </script>\x1b[31m \u202e \U0001f525'


def test_the_body_is_jsonresponses_and_follows_changes(tmp_path: Path) -> None:
    book = AlarmBook(tmp_path / "alarms.sqlite")
    try:
        book.apply([Signal("raise", "gw-1", "hz-0001", f"s-{i}", "fire_alarm", "fire",
                           HOSTILE, stamp=(1, i + 1)) for i in range(5)])
        alarms = book.list()

        def expected(more: dict[str, object]) -> bytes:
            return bytes(JSONResponse({"alarms": [alarm_json(a) for a in alarms],
                                       **more}).body)

        docs: list[dict[str, object]] = [
            {"next": None}, {"next": {"before_ms": 1, "before_id": "a1"}}, {}]
        for more in docs:
            assert alarms_body(alarms, more) == expected(more)
        assert alarms_body(alarms, {"next": None}) == expected({"next": None})  # remembered
        book.acknowledge(alarms[2].id, by="duty", note="见到了", origin="cli")
        alarms = book.list()
        assert alarms[2].acknowledged
        assert alarms_body(alarms, {"next": None}) == expected({"next": None})
        # An equal copy (as the file gives for a closed alarm) is the same bytes.
        copy = dataclasses.replace(alarms[0])
        assert copy is not alarms[0] and alarms_body([copy], {}) == alarms_body(alarms[:1], {})
    finally:
        book.close()


def test_the_memory_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonview, "CACHE_SIZE", 3)
    monkeypatch.setattr(jsonview, "_cache", jsonview._Encoded())
    book = AlarmBook(tmp_path / "alarms.sqlite")
    try:
        book.apply([Signal("raise", "gw-1", "hz-0001", f"s-{i}", "fire_alarm", "fire", "x",
                           stamp=(1, i + 1)) for i in range(10)])
        alarms_body(book.list(), {})
        assert 1 <= len(jsonview._cache.entries) <= 3
        monkeypatch.setattr(jsonview, "CACHE_SIZE", 1000)
        monkeypatch.setattr(jsonview, "CACHE_BYTES", 1000)  # two alarms' worth
        body = alarms_body(book.list(), {})
        assert len(body) > 3000 and 1 <= len(jsonview._cache.entries) <= 2
        assert jsonview._cache.bytes <= 1000
    finally:
        book.close()
