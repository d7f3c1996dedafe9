"""to_line: escaping rules, refusals, and a round trip through an independent parser.

The parser below follows the line protocol reference (InfluxDB 2.x / VictoriaMetrics
reading): ``\\,``, ``\\=`` and ``\\ `` unescape in names and tag values, ``\\"`` and ``\\\\`` in
string fields, every other backslash is literal. For any point, parsing to_line's output
must give back the point, changed only as lineproto's docstring says.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import lineproto, points
from collector.lineproto import lines_for_batch, to_line, to_lines
from collector.points import FieldValue, Point, points_for_batch
from protocols.wire import UNITS, Batch, Bus, Event, EventType, Measurement, Quantity, Source


def parse_line(line: str) -> Point:
    """A small reference parser of one line (test-side, independent of to_line)."""
    i = 0

    def ident(stop: str) -> str:
        nonlocal i
        out: list[str] = []
        while i < len(line):
            c = line[i]
            if c == "\\" and i + 1 < len(line) and line[i + 1] in ",= ":
                out.append(line[i + 1])
                i += 2
            elif c in stop:
                break
            else:
                out.append(c)
                i += 1
        return "".join(out)

    def expect(c: str) -> None:
        nonlocal i
        assert line[i] == c, (line, i, c)
        i += 1

    measurement = ident(", ")
    tags: list[tuple[str, str]] = []
    while line[i] == ",":
        i += 1
        key = ident("=")
        expect("=")
        tags.append((key, ident(", ")))
    expect(" ")
    fields: list[tuple[str, FieldValue]] = []
    while True:
        key = ident("=")
        expect("=")
        if line[i] == '"':
            i += 1
            chars: list[str] = []
            while line[i] != '"':
                if line[i] == "\\" and line[i + 1] in '"\\':
                    i += 1
                chars.append(line[i])
                i += 1
            i += 1
            fields.append((key, "".join(chars)))
        else:
            m = re.compile(r"[^, ]+").match(line, i)
            assert m is not None
            token = m.group()
            i = m.end()
            value: FieldValue
            if token in ("true", "false"):
                value = token == "true"
            elif token.endswith("i"):
                value = int(token[:-1])
            else:
                value = float(token)
            fields.append((key, value))
        if line[i] == ",":
            i += 1
            continue
        break
    expect(" ")
    return Point(measurement, tuple(tags), tuple(fields), int(line[i:]))


def test_escapes_by_position() -> None:
    p = Point("m x,y", (("a b", "c,d=e"), ("k", 'q"uote')),
              (("f=1", 'he said "hi" \\o/'), ("n", 3), ("b", False), ("x", 0.1)), 42)
    assert to_line(p) == ('m\\ x\\,y,a\\ b=c\\,d\\=e,k=q"uote '
                          'f\\=1="he said \\"hi\\" \\\\o/",n=3i,b=false,x=0.1 42')


def test_backslashes_in_identifiers_are_written_only_where_every_server_agrees() -> None:
    def tag_of(value: str) -> str:
        line = to_line(Point("m", (("t", value),), (("f", 1),), 1))
        assert line.startswith("m,t=") and line.endswith(" f=1i 1")
        return line[len("m,t="):-len(" f=1i 1")]

    assert tag_of("a\\b") == "a\\b"  # literal everywhere
    assert tag_of("a\\") == "a/"  # would escape the separator
    assert tag_of("a\\,b") == "a/\\,b"
    assert tag_of("a\\\\b") == "a/\\b"
    assert tag_of("a\\ b") == "a/\\ b"
    assert tag_of("a\\=b") == "a/\\=b"


def test_string_fields_keep_backslashes_and_write_newlines_as_text() -> None:
    line = to_line(Point("m", (), (("s", "a\\b\nc\rd\te"),), 1))
    assert line == 'm s="a\\\\b\\\\nc\\\\rd\te" 1'
    assert "\n" not in line and "\r" not in line


def test_numbers() -> None:
    fields: tuple[tuple[str, FieldValue], ...] = (
        ("f", 1.0), ("g", 1e-05), ("h", 1.5e16), ("i", -(2**63)), ("j", 2**63 - 1),
        ("k", True), ("z", -0.0))
    assert to_line(Point("m", (), fields, -5)) == \
        "m f=1.0,g=1e-05,h=1.5e+16,i=-9223372036854775808i,j=9223372036854775807i,k=true," \
        "z=-0.0 -5"


@pytest.mark.parametrize(("point", "message"), [
    (Point("m", (), (("f", math.nan),), 1), "no line-protocol form"),
    (Point("m", (), (("f", math.inf),), 1), "no line-protocol form"),
    (Point("m", (), (("f", 2**63),), 1), "64-bit"),
    (Point("m", (), (), 1), "at least one field"),
    (Point("m", (("t", ""),), (("f", 1),), 1), "empty"),
    (Point("m", (("", "v"),), (("f", 1),), 1), "empty"),
    (Point("", (), (("f", 1),), 1), "empty measurement"),
    (Point("#m", (), (("f", 1),), 1), "comment"),
    (Point("m", (("t", "a\nb"),), (("f", 1),), 1), "control character"),
    (Point("m", (("t", "a\tb"),), (("f", 1),), 1), "control character"),
    (Point("m", (), (("f", [1]),), 1), "not a line-protocol type"),  # type: ignore[arg-type]
    (Point("m", (), (("f", 1),), 2**63 - 1), "int64"),
])
def test_refuses_what_has_no_faithful_line(point: Point, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_line(point)


def test_to_lines_is_a_request_body() -> None:
    p = Point("m", (), (("f", 1),), 1)
    assert to_lines([p, p]) == "m f=1i 1\nm f=1i 1\n"
    assert to_lines([]) == ""


# -- round trip through the reference parser -----------------------------------------------

_names = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF,
                               blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
_strings = st.text(max_size=30)  # anything: control characters, quotes, newlines, Chinese
_values = st.one_of(
    _strings, st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False))


def _expected_identifier(s: str) -> str:
    return re.sub(r"\\(?=[\\,= ]|$)", "/", s)


def _expected_value(v: FieldValue) -> FieldValue:
    return v.replace("\n", "\\n").replace("\r", "\\r") if isinstance(v, str) else v


@settings(max_examples=400, deadline=None)
@given(_names.filter(lambda s: not s.startswith("#")),
       st.dictionaries(_names, _names, max_size=4),
       st.dictionaries(_names, _values, min_size=1, max_size=5),
       st.integers(-(2**63) + 1, 2**63 - 2))
def test_parser_reads_back_what_to_line_wrote(measurement: str, tags: dict[str, str],
                                              fields: dict[str, FieldValue], t: int) -> None:
    point = Point(measurement, tuple(sorted(tags.items())), tuple(fields.items()), t)
    line = to_line(point)
    assert "\n" not in line and "\r" not in line
    back = parse_line(line)
    assert back.measurement == _expected_identifier(measurement)
    assert back.tags == tuple((_expected_identifier(k), _expected_identifier(v))
                              for k, v in point.tags)
    assert back.fields == tuple((_expected_identifier(k), _expected_value(v))
                                for k, v in point.fields)
    for (_, got), (_, sent) in zip(back.fields, point.fields, strict=True):
        assert type(got) is type(sent)  # 1.0 stays a float, 1 an integer, True a boolean
    assert back.time_ns == t


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_names, _names, max_size=4),
       st.floats(allow_nan=False, allow_infinity=False), _strings,
       st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1),
       st.integers(-(2**63) + 1, 2**63 - 2))
def test_the_plain_reading_shortcut_writes_what_the_general_path_does(
        tags: dict[str, str], value: float, unit: str, priority: int, seq: int, t: int) -> None:
    """``to_line`` formats value/unit/priority/seq readings in one step; the same fields in
    another order take the general path, so the two lines must agree field for field."""
    fields: tuple[tuple[str, FieldValue], ...] = (
        ("value", value), ("unit", unit), ("priority", priority), ("seq", seq))
    fast = parse_line(to_line(Point("fg_value", tuple(sorted(tags.items())), fields, t)))
    general = parse_line(to_line(Point("fg_value", tuple(sorted(tags.items())),
                                       fields[::-1], t)))
    assert fast.fields == general.fields[::-1]
    assert (fast.measurement, fast.tags, fast.time_ns) == \
        (general.measurement, general.tags, general.time_ns)
    assert fast.fields == (("value", value), ("unit", _expected_value(unit)),
                           ("priority", priority), ("seq", seq))


# -- lines_for_batch: the decode thread's shortcut to lines ---------------------------------

_SERIES = [Source("modbus/bus1/3/pressure", Bus.MODBUS), Source("ble/a4c1/door", Bus.BLE),
           Source("modbus/bus2,=x\\/7", Bus.MODBUS),  # escaped in the head
           Source("panel/1-1/42-0x00000102", Bus.GB26875, system_type=1, system_address=1,
                  component_type=42, component_address=258, description="三层东走廊感烟探测器"),
           Source("modbus/bus1/3/pressure", Bus.MODBUS, description="same id, described")]


@st.composite
def _mixed_batches(draw: st.DrawFn) -> Batch:
    """Mostly plain readings over a few series (the shortcut and its cache), with addressed
    sources, source times, clamped times and events mixed in (the general path)."""
    seqs = draw(st.lists(st.integers(1, 2**53 - 1), min_size=1, max_size=20, unique=True))
    ms = st.integers(0, 2**53 - 1) | st.integers(1_700_000_000_000, 1_800_000_000_000)
    records: list[Event | Measurement] = []
    for seq in seqs:
        src = draw(st.sampled_from(_SERIES))
        if draw(st.integers(0, 5)):
            q = draw(st.sampled_from([q for q in Quantity if q is not Quantity.ANALOG]))
            records.append(Measurement(
                source=src, quantity=q, unit=draw(st.sampled_from(UNITS[q])),
                value=draw(st.floats(allow_nan=False, allow_infinity=False)),
                receive_ms=draw(ms), seq=seq, source_ms=draw(st.none() | st.none() | ms)))
        else:
            records.append(Event(source=src, type=draw(st.sampled_from(list(EventType))),
                                 receive_ms=draw(ms), seq=seq))
    return Batch(draw(st.sampled_from(["gw-1", "gw.2"])),
                 draw(st.none() | st.sampled_from(["site-1", "site_2"])), 1, tuple(records))


@settings(max_examples=300, deadline=None)
@given(_mixed_batches())
def test_lines_for_batch_writes_what_points_and_to_line_write(batch: Batch) -> None:
    general = [to_line(p) for p in points_for_batch(batch)]
    assert lines_for_batch(batch) == general
    assert lines_for_batch(batch) == general  # again, from the series cache


def test_lines_for_batch_takes_the_shortcut_for_plain_readings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The shortcut is what makes it fast: a plain reading never becomes a Point.
    src = Source("modbus/bus1/3/pressure", Bus.MODBUS)
    batch = Batch("gw-1", "site-1", 1, tuple(
        Measurement(source=src, quantity=Quantity.PRESSURE, value=0.3, unit="MPa",
                    receive_ms=1718000000000, seq=s) for s in range(1, 4)))
    lines_for_batch(batch)  # the series head is cached
    made: list[object] = []
    original = points.point_for_record

    def counting(*args: Any) -> Point:
        made.append(args)
        return original(*args)

    monkeypatch.setattr(lineproto, "point_for_record", counting)
    lines = lines_for_batch(batch)
    assert made == []
    assert lines[0] == ("fg_value,bus=modbus,gateway=gw-1,quantity=pressure,site=site-1,"
                        'source=modbus/bus1/3/pressure value=0.3,unit="MPa",priority=3i,seq=1i '
                        "1718000000000000001")
