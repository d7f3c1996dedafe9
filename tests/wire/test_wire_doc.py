"""docs/wire-protocol.md is executable: every ```json block decodes with the decoder its info
string names (```json batch, ```json status, ...), and the doc's tables match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocols.wire import (
    UNITS,
    EventType,
    Quantity,
    WireErrorReason,
    decode_ack,
    decode_batch,
    decode_command,
    decode_health,
    decode_status,
    decode_stored,
    default_priority,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-protocol.md"
TEXT = DOC.read_text(encoding="utf-8")
DECODERS = {
    "batch": decode_batch,
    "status": decode_status,
    "health": decode_health,
    "command": decode_command,
    "ack": decode_ack,
    "stored": decode_stored,
}
BLOCKS = re.findall(r"^```json(?: (\w+))?\n(.*?)^```$", TEXT, flags=re.MULTILINE | re.DOTALL)


def test_every_json_block_names_its_message_kind():
    assert BLOCKS
    assert {kind for kind, _ in BLOCKS} == set(DECODERS), "each kind has an example"


@pytest.mark.parametrize(
    ("kind", "block"), BLOCKS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BLOCKS)]
)
def test_json_block_decodes(kind, block):
    DECODERS[kind](block.encode("utf-8"))


def test_every_error_reason_is_documented():
    documented = set(re.findall(r"^\| `(\w+)` \| ", TEXT.split("## Errors", 1)[1], re.MULTILINE))
    assert documented == {r.value for r in WireErrorReason}


def test_event_type_table_matches_the_code():
    section = TEXT.split("#### Event types", 1)[1].split("### Measurement", 1)[0]
    seen: dict[str, int] = {}
    for names, pr in re.findall(r"^\| (`[^|]+`) \| [^|]+ \| (\d) ", section, re.MULTILINE):
        for name in re.findall(r"`(\w+)`", names):
            seen[name] = int(pr)
    assert seen == {t.value: int(default_priority(t)) for t in EventType}


def test_unit_table_matches_the_code():
    section = TEXT.split("| `q` | units |", 1)[1].split("\n\n", 1)[0]
    seen: dict[str, tuple[str, ...]] = {}
    for names, units in re.findall(r"^\| (`[^|]+`) \| ([^|]+) \|$", section, re.MULTILINE):
        # `""` is how the doc shows the empty unit of a count.
        unit_list = tuple("" if u == '""' else u for u in re.findall(r"`([^`]*)`", units))
        for name in re.findall(r"`(\w+)`", names):
            seen[name] = unit_list
    assert seen == {q.value: UNITS[q] for q in Quantity}
