"""Every golden input decodes to exactly its recorded output (rtl_433-style regression)."""

from __future__ import annotations

import json
import os

import pytest

from firegate.cli.decode import decode_stream
from protocols.gb26875 import STANDARD

from .golden import CASES, DATA, load


@pytest.mark.parametrize("name", CASES)
def test_golden_case(name: str) -> None:
    case = load(name)
    got = decode_stream(case.stream, STANDARD)
    path = DATA / name / "expected.json"
    if os.environ.get("FIREGATE_REGEN_GOLDEN"):
        path.write_text(json.dumps(got, ensure_ascii=False, indent=1) + "\n")
    expected = json.loads(path.read_text())
    assert got == expected
    assert all("frame" in item and "adu" in item for item in got), "golden frames all decode"
    assert len(got) == len(case.frames)
