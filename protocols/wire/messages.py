"""The five messages of the contract: one dataclass per MQTT channel.

Like the records, messages validate on construction (``__post_init__``) and raise
:class:`WireError` with the wire path of the offending field, so the decoders only map JSON
keys to fields and everything that exists can be encoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from enum import StrEnum
from typing import TypeAlias

from ._checks import (
    BAD_TYPE,
    BAD_VALUE,
    MAX_SAFE_INT,
    check_bool,
    check_epoch,
    check_float,
    check_id,
    check_int,
    check_ms,
    check_opt_float,
    check_opt_int,
    check_opt_text,
    check_text,
    check_token,
    json_type,
    set_field,
)
from .codes import Priority
from .errors import WireError, WireErrorReason
from .records import Event, Measurement, Record

__all__ = [
    "LWT_REASON",
    "MAX_RECORDS_PER_BATCH",
    "ArgValue",
    "Batch",
    "Command",
    "CommandAck",
    "CommandName",
    "GatewayState",
    "Health",
    "JsonValue",
    "LinkState",
    "Status",
    "last_will",
]

MAX_RECORDS_PER_BATCH = 5000
"""Bounds the collector's work per message whatever the byte limit is."""
LWT_REASON = "lwt"
NAME_MAX = 64  # driver names, counter reasons, link names
TEXT_MAX = 256  # error texts, string arguments
RESULT_DEPTH_MAX = 8


def _enum(path: str, value: object, enum: type[StrEnum]) -> object:
    """The member of ``enum`` for a member or its string value."""
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            allowed = [m.value for m in enum]
            raise WireError(BAD_VALUE, path, f"{value[:40]!r} is not one of {allowed}") from None
    raise WireError(BAD_TYPE, path, f"expected a string, got {json_type(value)}")


def _mapping(path: str, value: object) -> Mapping[object, object]:
    if not isinstance(value, Mapping):
        raise WireError(BAD_TYPE, path, f"expected an object, got {json_type(value)}")
    return value


@dataclass(frozen=True, slots=True)
class Batch:
    """Records from one gateway (channel ``records``). Not empty, unique ``seq`` values."""

    gateway_id: str
    site: str | None
    sent_ms: int
    records: tuple[Record, ...]
    epoch: int = 0
    """The sender's store epoch (``ep``): a random id made when its outbox or flash ring was
    created; 0 for a sender that does not say. Seqs are unique within one epoch."""

    def __post_init__(self) -> None:
        check_id("gw", self.gateway_id)
        if self.epoch:
            check_epoch("ep", self.epoch)
        if self.site is not None:
            check_id("site", self.site)
        check_ms("ts", self.sent_ms)
        records = self.records
        if records.__class__ is not tuple:
            if not isinstance(records, list):
                raise WireError(BAD_TYPE, "recs", f"expected records, got {json_type(records)}")
            records = tuple(records)
            set_field(self, "records", records)
        n = len(records)
        if n == 0:
            raise WireError(WireErrorReason.EMPTY_BATCH, "recs", "a batch carries >= 1 record")
        if n > MAX_RECORDS_PER_BATCH:
            raise WireError(
                WireErrorReason.TOO_MANY_RECORDS, "recs", f"{n} > {MAX_RECORDS_PER_BATCH} records"
            )
        # Fast path: one set of the seqs; the loop below only runs to explain a failure.
        try:
            seqs = {r.seq for r in records}
        except AttributeError:
            seqs = set()
        if len(seqs) != n or 0 in seqs:
            _explain_seqs(records)


def _explain_seqs(records: tuple[Record, ...]) -> None:
    seen: set[int] = set()
    for i, r in enumerate(records):
        if r.__class__ is not Event and r.__class__ is not Measurement:
            raise WireError(BAD_TYPE, f"recs[{i}]", f"expected a record, got {type(r).__name__}")
        if r.seq == 0:
            raise WireError(BAD_VALUE, f"recs[{i}].seq", "seq 0 is unassigned; use with_seq()")
        if r.seq in seen:
            raise WireError(WireErrorReason.DUPLICATE_SEQ, f"recs[{i}].seq", f"seq {r.seq} twice")
        seen.add(r.seq)


class GatewayState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Status:
    """Gateway presence (channel ``status``, retained, also the MQTT last will)."""

    gateway_id: str
    state: GatewayState
    ts_ms: int
    _: KW_ONLY
    version: str | None = None
    site: str | None = None
    reason: str | None = None
    """Why the state changed: ``"lwt"`` (the broker published the will), ``"shutdown"``..."""

    def __post_init__(self) -> None:
        check_id("gw", self.gateway_id)
        set_field(self, "state", _enum("state", self.state, GatewayState))
        check_ms("ts", self.ts_ms)
        check_opt_text("ver", self.version, NAME_MAX)
        if self.site is not None:
            check_id("site", self.site)
        check_opt_text("reason", self.reason, NAME_MAX)


def last_will(
    gateway_id: str, connect_ms: int, *, version: str | None = None, site: str | None = None
) -> Status:
    """The last-will payload registered at CONNECT.

    The broker publishes it later, so ``ts_ms`` is the connect time, not the moment the
    gateway was lost: the collector uses its own receive time for that.
    """
    return Status(
        gateway_id, GatewayState.OFFLINE, connect_ms, version=version, site=site, reason=LWT_REASON
    )


class LinkState(StrEnum):
    UP = "up"
    DOWN = "down"


_PRIORITY_LABELS = frozenset(p.label for p in Priority)


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    """Periodic gateway health (channel ``health``).

    ``cpu_percent``, ``mem_rss_bytes`` and ``disk_free_bytes`` are optional because an ESP32
    running MicroPython cannot measure them. Mappings are copied into plain dicts.
    """

    gateway_id: str
    ts_ms: int
    uptime_s: float
    version: str
    outbox_depth: int
    outbox_oldest_s: float | None = None
    evicted: Mapping[str, int] = field(default_factory=dict)
    """Records dropped from a full outbox, by priority label (``"measurement"``)."""
    counters: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Per driver, per reason (``{"gb26875/1": {"bad_checksum": 3}}``), since start."""
    links: Mapping[str, LinkState] = field(default_factory=dict)
    cpu_percent: float | None = None
    mem_rss_bytes: int | None = None
    disk_free_bytes: int | None = None
    last_seq: int = 0
    """Highest seq assigned so far (0: none yet); lets the collector see a tail gap."""
    epoch: int = 0
    """The epoch ``last_seq`` belongs to (see :attr:`Batch.epoch`)."""

    def __post_init__(self) -> None:
        check_id("gw", self.gateway_id)
        check_ms("ts", self.ts_ms)
        set_field(self, "uptime_s", check_float("uptime_s", self.uptime_s, 0.0))
        check_text("ver", self.version, NAME_MAX)
        check_int("ob_depth", self.outbox_depth, 0, MAX_SAFE_INT)
        set_field(
            self, "outbox_oldest_s", check_opt_float("ob_oldest_s", self.outbox_oldest_s, 0.0)
        )
        set_field(self, "evicted", _counts("evicted", self.evicted, _PRIORITY_LABELS))
        counters: dict[str, dict[str, int]] = {}
        for key, per_reason in _mapping("counters", self.counters).items():
            name = check_text("counters", key, NAME_MAX, empty=False)
            counters[name] = _counts(f"counters.{name}", per_reason, None)
        set_field(self, "counters", counters)
        links: dict[str, object] = {}
        for key, state in _mapping("links", self.links).items():
            name = check_text("links", key, NAME_MAX, empty=False)
            links[name] = _enum(f"links.{name}", state, LinkState)
        set_field(self, "links", links)
        set_field(self, "cpu_percent", check_opt_float("cpu_pct", self.cpu_percent, 0.0))
        check_opt_int("rss_bytes", self.mem_rss_bytes, 0, MAX_SAFE_INT)
        check_opt_int("disk_free_bytes", self.disk_free_bytes, 0, MAX_SAFE_INT)
        check_int("last_seq", self.last_seq, 0, MAX_SAFE_INT)
        if self.epoch:
            check_epoch("ep", self.epoch)


def _counts(path: str, value: object, keys: frozenset[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, n in _mapping(path, value).items():
        name = check_text(path, key, NAME_MAX, empty=False)
        if keys is not None and name not in keys:
            raise WireError(BAD_VALUE, f"{path}.{name}", f"not one of {sorted(keys)}")
        out[name] = check_int(f"{path}.{name}", n, 0, MAX_SAFE_INT)
    return out


class CommandName(StrEnum):
    PING = "ping"
    READ_PANEL_STATE = "read_panel_state"
    CHECK_POST = "check_post"
    """Ask the on-duty operator to confirm presence (查岗)."""
    SYNC_CLOCK = "sync_clock"
    REPORT_HEALTH = "report_health"
    RESEND = "resend"
    """Send seqs ``first``..``last`` of epoch ``ep`` again, if still held; the ack's result
    says how many were queued (``resent``) and which the gateway no longer has
    (``missing``: ``[[first, last], ...]``): those are lost (docs/wire-protocol.md)."""


ArgValue: TypeAlias = str | int | float | bool
JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
ID_MAX = 64
TTL_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Command:
    """A request to one gateway (channel ``cmd``), answered by a :class:`CommandAck`."""

    id: str
    """Chosen by the sender, echoed in the ack: 1-64 printable ASCII chars, no space."""
    cmd: CommandName
    ts_ms: int
    _: KW_ONLY
    args: Mapping[str, ArgValue] = field(default_factory=dict)
    ttl_s: int | None = None
    """Seconds after ``ts_ms`` when the command is stale and must not run (a queued
    ``check_post`` from yesterday is worse than none)."""

    def __post_init__(self) -> None:
        check_token("id", self.id, ID_MAX)
        set_field(self, "cmd", _enum("cmd", self.cmd, CommandName))
        check_ms("ts", self.ts_ms)
        args: dict[str, ArgValue] = {}
        for key, value in _mapping("args", self.args).items():
            name = check_token("args", key, 32)
            args[name] = _arg(f"args.{name}", value)
        set_field(self, "args", args)
        check_opt_int("ttl", self.ttl_s, 1, TTL_MAX)

    def expired(self, now_ms: int) -> bool:
        """True when ``ttl_s`` has passed since ``ts_ms`` (by the receiver's clock)."""
        return self.ttl_s is not None and now_ms > self.ts_ms + 1000 * self.ttl_s


def _arg(path: str, value: object) -> ArgValue:
    if value.__class__ is bool:
        return value
    if value.__class__ is int:
        return check_int(path, value, -MAX_SAFE_INT, MAX_SAFE_INT)
    if value.__class__ is float:
        return check_float(path, value)
    if value.__class__ is str:
        return check_text(path, value, TEXT_MAX)
    raise WireError(BAD_TYPE, path, f"expected a string, number or boolean, got {json_type(value)}")


@dataclass(frozen=True, slots=True)
class CommandAck:
    """The answer to a command (channel ``cmd/ack``): ``error`` is set exactly when not ok."""

    id: str
    ok: bool
    ts_ms: int
    _: KW_ONLY
    result: Mapping[str, JsonValue] | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        check_token("id", self.id, ID_MAX)
        check_bool("ok", self.ok)
        check_ms("ts", self.ts_ms)
        if self.result is not None:
            set_field(self, "result", _json("result", _mapping("result", self.result), 0))
        if self.ok:
            if self.error is not None:
                raise WireError(BAD_VALUE, "error", "an ok ack carries no error")
        elif self.error is None:
            raise WireError(WireErrorReason.MISSING_FIELD, "error", "a failed ack says why")
        else:
            check_text("error", self.error, TEXT_MAX)


def _json(path: str, value: object, depth: int) -> JsonValue:
    """Check a free JSON value (command results): finite numbers, no lone surrogates."""
    if depth > RESULT_DEPTH_MAX:
        raise WireError(BAD_VALUE, path, f"nested deeper than {RESULT_DEPTH_MAX}")
    if value is None or value.__class__ is bool:
        return value
    if value.__class__ is int:
        return check_int(path, value, -MAX_SAFE_INT, MAX_SAFE_INT)
    if value.__class__ is float:
        return check_float(path, value)
    if value.__class__ is str:
        return check_text(path, value, 4096)
    if isinstance(value, list | tuple):
        return [_json(f"{path}[{i}]", v, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for k, v in value.items():
            name = check_text(path, k, NAME_MAX, empty=False)
            out[name] = _json(f"{path}.{name}", v, depth + 1)
        return out
    raise WireError(BAD_TYPE, path, f"{type(value).__name__} is not a JSON value")
