"""Every golden input decodes to exactly its recorded output: a regression test.

The recorded outputs were written by this decoder (``FIREGATE_REGEN_GOLDEN``) and most inputs by
firegate's encoder (tests/data/gb26875/README), so this proves the output did not change, not
that it is right. Meanings written independently from the standard are checked in
test_reference_meanings.py (every upload type) and test_reference.py (K1-K8).
"""

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
