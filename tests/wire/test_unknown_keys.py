"""Unknown keys, everywhere, from the contract's own tables (issue 19).

A typo must be an error, not a silent default: every object of every message refuses a key v1
does not define (``unknown_field``, with the object's path), and passes ``x_*`` extension keys.
The cases are generated: the key tables of docs/wire-protocol.md say which keys each object
has, and the document's own examples are the valid messages the keys are planted in - so a
check removed from one object's decoder, or a widened extension prefix, fails here."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols.wire import (
    WireError,
    WireErrorReason,
    decode_ack,
    decode_batch,
    decode_command,
    decode_health,
    decode_status,
    decode_stored,
)

DOC = (Path(__file__).resolve().parents[2] / "docs" / "wire-protocol.md").read_text("utf-8")
DECODERS: dict[str, Callable[[bytes], Any]] = {
    "batch": decode_batch, "status": decode_status, "health": decode_health,
    "command": decode_command, "ack": decode_ack, "stored": decode_stored,
}


def table_keys(section: str, stop: str) -> set[str]:
    """The first column of the first key table (``| key | field | ...``) between two
    headings of the document (a section may have other tables: units, code lists)."""
    text = DOC.split(section, 1)[1].split(stop, 1)[0]
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| key |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return set(re.findall(r"^\| `(\w+)` \| ", "\n".join(table), re.MULTILINE))


COMMON = table_keys("### Common fields", "### Source")
TABLES: dict[str, set[str]] = {
    "batch": table_keys("### Batch\n", "```json"),
    "status": table_keys("### Status\n", "```json"),
    "health": table_keys("### Health\n", "```json"),
    "stored": table_keys("### Stored\n", "```json"),
    "command": table_keys("### Command\n", "```json"),
    "ack": table_keys("### Ack\n", "```json"),
    "source": table_keys("### Source\n", "### Event"),
    "event": COMMON | table_keys("### Event (", "#### Event types"),
    "measurement": COMMON | table_keys("### Measurement (", "### Priorities"),
}
EXAMPLES = [(kind, json.loads(block)) for kind, block in re.findall(
    r"^```json (\w+)\n(.*?)^```$", DOC, flags=re.MULTILINE | re.DOTALL)]


def objects(kind: str, doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(table, path, object) for every object of a message that has a key table."""
    yield kind, "", doc
    for i, rec in enumerate(doc.get("recs", []) if kind == "batch" else []):
        yield ("event" if rec["k"] == "e" else "measurement"), f"recs[{i}]", rec
        yield "source", f"recs[{i}].src", rec["src"]


CASES = [(kind, doc, table, path) for kind, doc in EXAMPLES
         for table, path, _ in objects(kind, doc)]


def test_the_tables_are_read_and_every_object_kind_is_covered() -> None:
    assert all(len(keys) >= 3 for keys in TABLES.values()), TABLES
    assert {table for _, _, table, _ in CASES} == set(TABLES)


@pytest.mark.parametrize(("kind", "doc", "table", "path"), CASES,
                         ids=[f"{k}:{t}:{p or 'top'}" for k, _, t, p in CASES])
def test_an_unknown_key_is_refused_and_an_extension_passes(kind: str, doc: dict[str, Any],
                                                           table: str, path: str) -> None:
    decode = DECODERS[kind]
    expected = decode(json.dumps(doc).encode())

    def planted(key: str) -> bytes:
        copy = json.loads(json.dumps(doc))
        target = next(obj for t, p, obj in objects(kind, copy) if (t, p) == (table, path))
        assert key not in TABLES[table]
        target[key] = 1
        return json.dumps(copy).encode()

    for key in ("zz", "x", "xfoo", "X_foo", "_x"):  # not v1, and not the x_ prefix
        with pytest.raises(WireError) as info:
            decode(planted(key))
        assert info.value.reason is WireErrorReason.UNKNOWN_FIELD, key
        assert info.value.path == (f"{path}.{key}" if path else key)
    assert decode(planted("x_vendor_note")) == expected  # an extension: ignored


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_documented_key_is_one_the_decoder_knows(table: str) -> None:
    """The other direction: a key in the table is never refused as unknown (a table and a
    decoder that drifted apart)."""
    examples = [(kind, doc, path) for kind, doc, t, path in CASES if t == table]
    kind, doc, path = examples[0]
    for key in sorted(TABLES[table]):
        copy = json.loads(json.dumps(doc))
        target = next(obj for t, p, obj in objects(kind, copy) if (t, p) == (table, path))
        if key in target:
            continue  # present in the example, so already accepted by the round trip
        target[key] = None  # wrong or missing value is fine here; unknown is not
        try:
            DECODERS[kind](json.dumps(copy).encode())
        except WireError as e:
            assert e.reason is not WireErrorReason.UNKNOWN_FIELD, (table, key, e)
