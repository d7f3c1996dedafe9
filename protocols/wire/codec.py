"""Records and batches to bytes and back (channel ``records``).

Wire form of a batch (keys in this order when encoded; any order when decoded)::

    {"v":1,"gw":"gw-01","site":"site-7","ts":1718000000123,"recs":[<record>,...]}

A record is an object with ``"k":"e"`` (event) or ``"k":"m"`` (measurement); the key table
is in docs/wire-protocol.md. ``None`` fields are omitted. ``decode_batch`` is on the
collector's hot path (target: 300,000 records/s on one core), which is why it hands JSON
values straight to the record constructors - they validate every field once - and only
walks a batch a second time to find the index of a record that failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from ._checks import BAD_TYPE, BAD_VALUE, check_epoch, check_id, check_ms, epoch_text, parse_epoch
from ._json import VERSION, check_keys, dumps, dumps_str, parse, required
from .codes import Priority
from .errors import WireError, WireErrorReason
from .messages import MAX_RECORDS_PER_BATCH, Batch, Health, Status
from .records import Event, Measurement, Record, Source, new_event, new_measurement, new_source

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PackedBatch",
    "PartialBatch",
    "RecordFault",
    "check_gateway",
    "decode_batch",
    "decode_batch_partial",
    "encode_batch",
    "encode_batch_from_encoded",
    "encode_batches",
    "encode_record",
    "pack_batches",
]

MAX_PAYLOAD_BYTES = 131072
"""128 KiB: the AWS IoT Core message limit, and inside the defaults of common brokers."""

_BATCH_KEYS = frozenset({"v", "gw", "site", "ep", "ts", "recs"})
_RECORD_KEYS = frozenset({"seq", "k", "rt", "st", "pr", "src"})
_EVENT_KEYS = _RECORD_KEYS | {"ev", "on", "sw", "ops", "opr", "v", "lim", "det"}
_MEASUREMENT_KEYS = _RECORD_KEYS | {"q", "v", "u"}
_SOURCE_KEYS = frozenset({"id", "bus", "sys", "sa", "ct", "ca", "desc"})
_MEASUREMENT = Priority.MEASUREMENT


# -- encoding ----------------------------------------------------------------------------


def _source_obj(s: Source) -> dict[str, object]:
    d: dict[str, object] = {"id": s.id, "bus": s.bus.value}
    if s.system_type is not None:
        d["sys"] = s.system_type
    if s.system_address is not None:
        d["sa"] = s.system_address
    if s.component_type is not None:
        d["ct"] = s.component_type
    if s.component_address is not None:
        d["ca"] = s.component_address
    if s.description is not None:
        d["desc"] = s.description
    return d


def _record_obj(r: Record) -> dict[str, object]:
    if r.__class__ is not Event and r.__class__ is not Measurement:
        raise WireError(BAD_TYPE, "", f"expected an Event or a Measurement, not {type(r).__name__}")
    if r.seq == 0:
        raise WireError(BAD_VALUE, "seq", "seq 0 is unassigned: number records with with_seq()")
    d: dict[str, object] = {"seq": r.seq, "k": "m", "rt": r.receive_ms}
    if r.source_ms is not None:
        d["st"] = r.source_ms
    if isinstance(r, Measurement):
        if r.priority is not _MEASUREMENT:
            d["pr"] = r.priority.value
        d["src"] = _source_obj(r.source)
        d["q"] = r.quantity.value
        d["v"] = r.value
        d["u"] = r.unit
        return d
    d["k"] = "e"
    d["pr"] = r.priority.value  # always written for events: readable without the table
    d["src"] = _source_obj(r.source)
    d["ev"] = r.type.value
    d["on"] = r.active
    if r.state is not None:
        d["sw"] = r.state
    if r.operations:
        d["ops"] = list(r.operations)
    if r.operator is not None:
        d["opr"] = r.operator
    if r.value is not None:
        d["v"] = r.value
    if r.limit is not None:
        d["lim"] = r.limit
    if r.detail is not None:
        d["det"] = r.detail
    return d


def encode_record(record: Record) -> bytes:
    """One record as the JSON object that goes into ``recs`` (seq must be assigned).

    Byte for byte the record's part of an encoded batch, so ``len()`` of it is what the
    record adds to a payload (plus one comma).
    """
    return dumps(_record_obj(record))


def _head(gateway_id: str, site: str | None, sent_ms: int, epoch: int = 0) -> bytes:
    head: dict[str, object] = {"v": VERSION, "gw": check_id("gw", gateway_id)}
    if site is not None:
        head["site"] = check_id("site", site)
    if epoch:
        head["ep"] = epoch_text(check_epoch("ep", epoch))
    head["ts"] = check_ms("ts", sent_ms)
    # '{"v":1,...,"ts":N}' -> '{"v":1,...,"ts":N,"recs":[' ; records and ']}' follow.
    return dumps_str(head)[:-1].encode() + b',"recs":['


def encode_batch(batch: Batch, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> bytes:
    """One batch as one payload; TOO_LARGE if it does not fit ``max_bytes``."""
    payload = b"".join(
        (_head(batch.gateway_id, batch.site, batch.sent_ms, batch.epoch), _join(batch.records),
         b"]}")
    )
    if len(payload) > max_bytes:
        raise WireError(WireErrorReason.TOO_LARGE, "", f"{len(payload)} bytes > {max_bytes}")
    return payload


def encode_batch_from_encoded(
    gateway_id: str,
    site: str | None,
    sent_ms: int,
    encoded: Sequence[bytes],
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    epoch: int = 0,
) -> bytes:
    """One batch payload from records already encoded by :func:`encode_record`.

    The edge outbox stores each record's bytes when it commits it, so resending a backlog
    costs a join, not a re-encode. Byte-identical to :func:`encode_batch` of the same
    records. The fragments are trusted (they come from ``encode_record``): only the count
    (EMPTY_BATCH, TOO_MANY_RECORDS) and the size (TOO_LARGE) are checked, not duplicate seqs.
    """
    n = len(encoded)
    if n == 0:
        raise WireError(WireErrorReason.EMPTY_BATCH, "recs", "a batch carries >= 1 record")
    if n > MAX_RECORDS_PER_BATCH:
        raise WireError(
            WireErrorReason.TOO_MANY_RECORDS, "recs", f"{n} > {MAX_RECORDS_PER_BATCH} records"
        )
    payload = b"".join((_head(gateway_id, site, sent_ms, epoch), b",".join(encoded), b"]}"))
    if len(payload) > max_bytes:
        raise WireError(WireErrorReason.TOO_LARGE, "", f"{len(payload)} bytes > {max_bytes}")
    return payload


def _join(records: Iterable[Record]) -> bytes:
    return dumps_str([_record_obj(r) for r in records])[1:-1].encode()


class PackedBatch(NamedTuple):
    """One payload of :func:`pack_batches` and the seqs it carries (for the outbox to
    delete once the broker has acknowledged the publish)."""

    payload: bytes
    seqs: tuple[int, ...]


def pack_batches(
    gateway_id: str,
    site: str | None,
    sent_ms: int,
    records: Sequence[Record],
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_records: int = MAX_RECORDS_PER_BATCH,
    epoch: int = 0,
) -> list[PackedBatch]:
    """Split ``records`` into as few payloads as fit, greedily and in order.

    Every payload is at most ``max_bytes`` long and carries at most ``max_records``
    records. A record that cannot fit even alone is TOO_LARGE (with its ``recs[i]`` path);
    a seq of 0 or a seq given twice is refused for the whole call. No records, no payloads.
    """
    if not 1 <= max_records <= MAX_RECORDS_PER_BATCH:
        raise ValueError(f"max_records must be in 1..{MAX_RECORDS_PER_BATCH}")
    head = _head(gateway_id, site, sent_ms, epoch)
    overhead = len(head) + 2  # b"]}"
    fragments: list[bytes] = []
    seen: set[int] = set()
    for i, r in enumerate(records):
        try:
            fragment = encode_record(r)
        except WireError as e:
            raise e.under(f"recs[{i}]") from None
        if r.seq in seen:
            raise WireError(WireErrorReason.DUPLICATE_SEQ, f"recs[{i}].seq", f"seq {r.seq} twice")
        seen.add(r.seq)
        if overhead + len(fragment) > max_bytes:
            raise WireError(
                WireErrorReason.TOO_LARGE,
                f"recs[{i}]",
                f"record of {len(fragment)} bytes cannot fit a {max_bytes}-byte payload",
            )
        fragments.append(fragment)

    packed: list[PackedBatch] = []
    start, size = 0, overhead
    for i, fragment in enumerate(fragments):
        extra = len(fragment) + (1 if i > start else 0)  # a comma before all but the first
        if size + extra > max_bytes or i - start == max_records:
            packed.append(_pack(head, fragments, records, start, i))
            start, size, extra = i, overhead, len(fragment)
        size += extra
    if fragments:
        packed.append(_pack(head, fragments, records, start, len(fragments)))
    return packed


def _pack(
    head: bytes, fragments: list[bytes], records: Sequence[Record], start: int, stop: int
) -> PackedBatch:
    payload = b"".join((head, b",".join(fragments[start:stop]), b"]}"))
    return PackedBatch(payload, tuple(r.seq for r in records[start:stop]))


def encode_batches(
    gateway_id: str,
    site: str | None,
    sent_ms: int,
    records: Sequence[Record],
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_records: int = MAX_RECORDS_PER_BATCH,
    epoch: int = 0,
) -> list[bytes]:
    """:func:`pack_batches` without the seqs: just the payloads, in order."""
    packed = pack_batches(
        gateway_id, site, sent_ms, records, max_bytes=max_bytes, max_records=max_records,
        epoch=epoch,
    )
    return [p.payload for p in packed]


# -- decoding ----------------------------------------------------------------------------

_SourceCache = dict[tuple[Any, ...], tuple[Source, tuple[type, ...] | None]]

# Sources repeat: a building's sensors report again and again, so most ``src`` objects a
# collector sees are ones it has already validated. Like ``re``'s pattern cache, this memo
# changes only speed, never a result (see _decode_source), and is bounded: when full it is
# simply emptied. Dict operations are atomic, so concurrent decoders at worst miss more.
SOURCE_CACHE_MAX = 16384
_SOURCES: _SourceCache = {}


def decode_batch(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Batch:
    """A ``records`` payload to a :class:`Batch`, or :class:`WireError` - nothing else."""
    obj = parse(payload, max_bytes)
    check_keys(obj, _BATCH_KEYS, "")
    gateway_id = required(obj, "gw", "")
    sent_ms = required(obj, "ts", "")
    recs = required(obj, "recs", "")
    if recs.__class__ is not list:
        raise WireError(BAD_TYPE, "recs", "expected an array")
    # Refuse oversize arrays before building thousands of records.
    if len(recs) > MAX_RECORDS_PER_BATCH:
        raise WireError(
            WireErrorReason.TOO_MANY_RECORDS, "recs", f"{len(recs)} > {MAX_RECORDS_PER_BATCH}"
        )
    sources = _SOURCES
    if len(sources) > SOURCE_CACHE_MAX:
        sources.clear()
    try:
        records = tuple([_decode_record(d, sources) for d in recs])
    except WireError:
        _explain_record(recs)
        raise  # not reached: _explain_record raises the same error with its index
    return Batch(gateway_id, obj.get("site"), sent_ms, records, _epoch(obj))


def _epoch(obj: dict[str, Any]) -> int:
    return parse_epoch("ep", obj["ep"]) if "ep" in obj else 0


class RecordFault(NamedTuple):
    """One record of a batch that does not decode; the rest of its batch stands."""

    position: int
    """Its index in the batch's ``recs``."""
    seq: int | None
    """Its ``seq`` when that field itself is valid (a positive integer), else None."""
    error: WireError
    """Reason and path (``recs[3].u``)."""
    raw: bytes
    """The record as it came, re-encoded as compact JSON (for the dead letter)."""


class PartialBatch(NamedTuple):
    """A batch decoded record by record: the valid records, and the faults of the others."""

    gateway_id: str
    """The header's gateway (valid: checked even when no record is)."""
    epoch: int
    """The header's epoch (0 when absent)."""
    batch: Batch | None
    """The valid records with the batch's header; None when no record is valid."""
    faults: tuple[RecordFault, ...]


def decode_batch_partial(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES
                         ) -> PartialBatch:
    """Like :func:`decode_batch`, but a record that does not decode costs only itself.

    Faults of the batch as a whole (not JSON, a bad header, ``recs`` not an array, too many
    records, a seq twice) raise :class:`WireError` as ``decode_batch`` does; a record that is
    not valid comes back as a :class:`RecordFault` beside the others, so one bad record cannot
    take a fire alarm in the same message with it (the collector stores the valid records and
    dead-letters each fault alone). A batch whose records all decode costs what
    ``decode_batch`` costs.
    """
    obj = parse(payload, max_bytes)
    check_keys(obj, _BATCH_KEYS, "")
    gateway_id = required(obj, "gw", "")
    sent_ms = required(obj, "ts", "")
    site = obj.get("site")
    epoch = _epoch(obj)
    recs = required(obj, "recs", "")
    if recs.__class__ is not list:
        raise WireError(BAD_TYPE, "recs", "expected an array")
    if len(recs) > MAX_RECORDS_PER_BATCH:
        raise WireError(
            WireErrorReason.TOO_MANY_RECORDS, "recs", f"{len(recs)} > {MAX_RECORDS_PER_BATCH}"
        )
    if not recs:
        raise WireError(WireErrorReason.EMPTY_BATCH, "recs", "a batch carries >= 1 record")
    sources = _SOURCES
    if len(sources) > SOURCE_CACHE_MAX:
        sources.clear()
    try:
        records = tuple([_decode_record(d, sources) for d in recs])
        return PartialBatch(gateway_id, epoch, Batch(gateway_id, site, sent_ms, records, epoch),
                            ())
    except WireError:
        pass  # a record, or the header: walk the records one by one to tell which
    valid: list[Record] = []
    faults: list[RecordFault] = []
    for i, d in enumerate(recs):
        try:
            valid.append(_decode_record(d, {}))
        except WireError as e:
            faults.append(RecordFault(i, _seq_of(d), e.under(f"recs[{i}]"), _raw(d)))
    if not valid:
        check_id("gw", gateway_id)  # a bad header is the batch's fault, not its records'
        if site is not None:
            check_id("site", site)
        check_ms("ts", sent_ms)
        return PartialBatch(gateway_id, epoch, None, tuple(faults))
    return PartialBatch(gateway_id, epoch,
                        Batch(gateway_id, site, sent_ms, tuple(valid), epoch), tuple(faults))


def _seq_of(d: Any) -> int | None:
    seq = d.get("seq") if d.__class__ is dict else None
    return seq if seq.__class__ is int and 0 < seq < 2**63 else None


def _raw(d: Any) -> bytes:
    try:
        return dumps(d)
    except (TypeError, ValueError):
        return repr(d).encode("utf-8", "replace")


def _explain_record(recs: list[Any]) -> None:
    for i, d in enumerate(recs):
        try:
            _decode_record(d, {})
        except WireError as e:
            raise e.under(f"recs[{i}]") from None


def _decode_record(d: Any, sources: _SourceCache) -> Record:
    if d.__class__ is not dict:
        raise WireError(BAD_TYPE, "", "a record is an object")
    kind = d.get("k")
    try:
        if kind == "m":
            if not d.keys() <= _MEASUREMENT_KEYS:
                check_keys(d, _MEASUREMENT_KEYS, "")
            if (unit := d["u"]) is None:
                raise WireError(BAD_TYPE, "u", "required, got null")
            return new_measurement(
                d["seq"],
                d["rt"],
                _decode_source(d["src"], sources),
                d["q"],
                d["v"],
                unit,
                _MEASUREMENT if (pr := d.get("pr")) is None else pr,
                d.get("st"),
            )
        if kind == "e":
            if not d.keys() <= _EVENT_KEYS:
                check_keys(d, _EVENT_KEYS, "")
            if (pr := d["pr"]) is None:  # required on events, or Event would default it
                raise WireError(BAD_TYPE, "pr", "required, got null")
            return new_event(
                d["seq"],
                d["rt"],
                _decode_source(d["src"], sources),
                d["ev"],
                d["on"],
                pr,
                d.get("st"),
                d.get("sw"),
                () if (ops := d.get("ops")) is None else ops,
                d.get("opr"),
                d.get("v"),
                d.get("lim"),
                d.get("det"),
            )
    except KeyError as e:
        # Only the d[...] look-ups above raise KeyError; the constructors map their own.
        raise WireError(WireErrorReason.MISSING_FIELD, str(e.args[0]), "required") from None
    if kind is None:
        raise WireError(WireErrorReason.MISSING_FIELD, "k", "required: 'e' or 'm'")
    if kind.__class__ is not str:
        raise WireError(BAD_TYPE, "k", "expected a string")
    raise WireError(BAD_VALUE, "k", f"{kind[:20]!r} is not 'e' or 'm'")


def _decode_source(d: Any, cache: _SourceCache) -> Source:
    """The Source of a ``src`` object, validated and built once per distinct object.

    The cache key is the object's items. Equal keys do not imply equal JSON, though:
    ``1 == 1.0 == true`` in Python, so ``{"sa": true}`` would hit the entry of ``{"sa": 1}``.
    Entries without integer fields cannot alias; for the others the value types are stored
    and compared too, which keeps the bool-is-not-an-int rule.
    """
    if d.__class__ is not dict:
        raise WireError(BAD_TYPE, "src", "a source is an object")
    try:
        key = tuple(d.items())
        hit = cache.get(key)
    except TypeError:  # an unhashable value (array, object): invalid, let the checks say so
        key, hit = (), None
    if hit is not None and (hit[1] is None or tuple(map(type, d.values())) == hit[1]):
        return hit[0]
    if not d.keys() <= _SOURCE_KEYS:
        check_keys(d, _SOURCE_KEYS, "src")
        # Not memoized: x_* values are unbounded, so entries holding them could pin up to a
        # payload each. Known fields are bounded (an entry is well under 1 KB).
        key = ()
    try:
        source = new_source(
            d["id"], d["bus"], d.get("sys"), d.get("sa"), d.get("ct"), d.get("ca"), d.get("desc")
        )
    except KeyError as e:
        raise WireError(WireErrorReason.MISSING_FIELD, f"src.{e.args[0]}", "required") from None
    if key:
        # Only the integer fields can alias.
        if (
            source.system_type is None
            and source.system_address is None
            and source.component_type is None
            and source.component_address is None
        ):
            cache[key] = (source, None)
        else:
            cache[key] = (source, tuple(map(type, d.values())))
    return source


def check_gateway(topic_gateway_id: str,
                  message: Batch | PartialBatch | Status | Health) -> None:
    """GATEWAY_MISMATCH unless the payload's ``gw`` is the gateway id of its topic.

    The broker's ACL binds a client to its own topics; this catches a gateway configured
    with another gateway's id (or a misrouted bridge) before its records are stored.
    """
    if message.gateway_id != topic_gateway_id:
        raise WireError(
            WireErrorReason.GATEWAY_MISMATCH,
            "gw",
            f"payload says {message.gateway_id!r}, topic says {topic_gateway_id!r}",
        )
