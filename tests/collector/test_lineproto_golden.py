"""Golden line protocol: payload in (``input.json``), exact line protocol out (``expected.lp``).

Each case directory under ``tests/data/lineproto/`` holds a NOTE saying what it shows. The
kind of input is the directory's prefix: ``batch-`` (the wire payload, fed to the contract's
decoder as bytes), ``health-`` (``{"site", "payload"}``), ``status-`` (``{"received_ms",
"payload"}``), ``risk-`` and ``gap-`` (the arguments of point_for_risk / point_for_gap).
``FIREGATE_UPDATE_GOLDEN=1`` rewrites the expected files - then read the diff line by line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from collector.lineproto import lines_for_batch, to_line, to_lines
from collector.points import (
    Point,
    point_for_gap,
    point_for_risk,
    points_for_batch,
    points_for_health,
    points_for_status,
)
from protocols.wire import EventType, Quantity, decode_batch, decode_health, decode_status

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "lineproto"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def golden_points(case: str) -> list[Point]:
    """The points the collector makes from one golden input."""
    raw = (GOLDEN / case / "input.json").read_bytes()
    kind = case.split("-", 1)[0]
    if kind == "batch":
        return points_for_batch(decode_batch(raw))
    data = json.loads(raw)
    if kind == "health":
        payload = json.dumps(data["payload"], ensure_ascii=False).encode()
        return points_for_health(decode_health(payload), data["site"])
    if kind == "status":
        payload = json.dumps(data["payload"], ensure_ascii=False).encode()
        return points_for_status(decode_status(payload), received_ms=data["received_ms"])
    if kind == "risk":
        return [point_for_risk(data["site"], data["colour"], data["reasons"], data["time_ms"])]
    if kind == "gap":
        return [point_for_gap(data["gateway_id"], data["first"], data["last"], data["time_ms"])]
    raise AssertionError(f"unknown golden case kind {kind!r}")


@pytest.mark.parametrize("case", CASES)
def test_golden_line_protocol(case: str) -> None:
    lines = to_lines(golden_points(case))
    expected = GOLDEN / case / "expected.lp"
    if os.environ.get("FIREGATE_UPDATE_GOLDEN") == "1":
        expected.write_text(lines, encoding="utf-8")
    assert (GOLDEN / case / "NOTE").read_text().strip(), "every case says what it shows"
    assert lines == expected.read_text(encoding="utf-8")
    if case.startswith("batch-"):  # the decode thread's shortcut (an InfluxDB sink) too
        batch = decode_batch((GOLDEN / case / "input.json").read_bytes())
        assert "".join(f"{line}\n" for line in lines_for_batch(batch)) == lines


@pytest.mark.parametrize("case", CASES)
def test_golden_is_deterministic_and_line_per_point(case: str) -> None:
    first, second = golden_points(case), golden_points(case)
    assert first == second  # a redelivered payload makes identical points: they overwrite
    text = (GOLDEN / case / "expected.lp").read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == len(first)
    assert [to_line(p) for p in first] == text.splitlines()


def test_golden_cases_cover_every_kind_event_type_and_quantity() -> None:
    kinds = {c.split("-", 1)[0] for c in CASES}
    assert kinds == {"batch", "health", "status", "risk", "gap"}
    measurements = {p.measurement for c in CASES for p in golden_points(c)}
    assert measurements == {"fg_event", "fg_value", "fg_health", "fg_counter", "fg_link",
                            "fg_gateway", "fg_risk", "fg_gap"}
    events = {p.tag("type") for c in CASES for p in golden_points(c) if p.measurement == "fg_event"}
    assert events == {t.value for t in EventType}
    quantities = {p.tag("quantity") for c in CASES for p in golden_points(c)
                  if p.measurement == "fg_value"}
    assert quantities == {q.value for q in Quantity}


def test_golden_escaping_case_has_every_special_character() -> None:
    text = (GOLDEN / "batch-escaping" / "expected.lp").read_text(encoding="utf-8")
    for needle in ("\\,", "\\=", '\\"', "\\\\", "\\n", "\\r", "\t", "二层 配电间,东=西"):
        assert needle in text, needle
    assert "\r" not in text.replace("\\r", "")  # no raw carriage return reaches the body
