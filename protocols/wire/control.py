"""Status, health, commands and acks to bytes and back.

These are small and infrequent, so their keys are spelled out more than the records'
(an operator reading ``mosquitto_sub`` output should not need the doc). Same rules as
batches: ``"v":1`` first, ``None`` omitted, unknown keys refused unless ``x_*``.
"""

from __future__ import annotations

from typing import Any

from ._checks import check_token, epoch_text, parse_epoch
from ._json import VERSION, check_keys, dumps, parse, required
from .codec import MAX_PAYLOAD_BYTES
from .messages import ID_MAX, Command, CommandAck, Health, Status

__all__ = [
    "decode_ack",
    "decode_command",
    "decode_health",
    "decode_status",
    "encode_ack",
    "encode_command",
    "encode_health",
    "encode_status",
    "peek_command_id",
]

_STATUS_KEYS = frozenset({"v", "gw", "state", "ts", "ver", "site", "reason"})
_HEALTH_KEYS = frozenset(
    {
        "v",
        "gw",
        "ts",
        "uptime_s",
        "ver",
        "ob_depth",
        "ob_oldest_s",
        "evicted",
        "counters",
        "links",
        "cpu_pct",
        "rss_bytes",
        "disk_free_bytes",
        "last_seq",
        "ep",
    }
)
_COMMAND_KEYS = frozenset({"v", "id", "cmd", "ts", "args", "ttl"})
_ACK_KEYS = frozenset({"v", "id", "ok", "ts", "result", "error"})


def _put(d: dict[str, object], key: str, value: object) -> None:
    if value is not None:
        d[key] = value


def encode_status(status: Status) -> bytes:
    d: dict[str, object] = {"v": VERSION, "gw": status.gateway_id, "state": status.state.value}
    d["ts"] = status.ts_ms
    _put(d, "ver", status.version)
    _put(d, "site", status.site)
    _put(d, "reason", status.reason)
    return dumps(d)


def decode_status(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Status:
    obj = parse(payload, max_bytes)
    check_keys(obj, _STATUS_KEYS, "")
    return Status(
        required(obj, "gw", ""),
        required(obj, "state", ""),
        required(obj, "ts", ""),
        version=obj.get("ver"),
        site=obj.get("site"),
        reason=obj.get("reason"),
    )


def encode_health(health: Health) -> bytes:
    d: dict[str, object] = {"v": VERSION, "gw": health.gateway_id, "ts": health.ts_ms}
    d["uptime_s"] = health.uptime_s
    d["ver"] = health.version
    d["ob_depth"] = health.outbox_depth
    _put(d, "ob_oldest_s", health.outbox_oldest_s)
    d["evicted"] = dict(health.evicted)
    d["counters"] = {k: dict(v) for k, v in health.counters.items()}
    d["links"] = {k: v.value for k, v in health.links.items()}
    _put(d, "cpu_pct", health.cpu_percent)
    _put(d, "rss_bytes", health.mem_rss_bytes)
    _put(d, "disk_free_bytes", health.disk_free_bytes)
    d["last_seq"] = health.last_seq
    if health.epoch:
        d["ep"] = epoch_text(health.epoch)
    return dumps(d)


def decode_health(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Health:
    obj = parse(payload, max_bytes)
    check_keys(obj, _HEALTH_KEYS, "")
    return Health(
        gateway_id=required(obj, "gw", ""),
        ts_ms=required(obj, "ts", ""),
        uptime_s=required(obj, "uptime_s", ""),
        version=required(obj, "ver", ""),
        outbox_depth=required(obj, "ob_depth", ""),
        outbox_oldest_s=obj.get("ob_oldest_s"),
        evicted=_or_empty(obj, "evicted"),
        counters=_or_empty(obj, "counters"),
        links=_or_empty(obj, "links"),
        cpu_percent=obj.get("cpu_pct"),
        mem_rss_bytes=obj.get("rss_bytes"),
        disk_free_bytes=obj.get("disk_free_bytes"),
        last_seq=required(obj, "last_seq", ""),
        epoch=parse_epoch("ep", obj["ep"]) if "ep" in obj else 0,
    )


def _or_empty(obj: dict[str, Any], key: str) -> Any:
    value = obj.get(key)
    return {} if value is None else value


def encode_command(command: Command) -> bytes:
    d: dict[str, object] = {"v": VERSION, "id": command.id, "cmd": command.cmd.value}
    d["ts"] = command.ts_ms
    if command.args:
        d["args"] = dict(command.args)
    _put(d, "ttl", command.ttl_s)
    return dumps(d)


def decode_command(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Command:
    obj = parse(payload, max_bytes)
    check_keys(obj, _COMMAND_KEYS, "")
    return Command(
        required(obj, "id", ""),
        required(obj, "cmd", ""),
        required(obj, "ts", ""),
        args=_or_empty(obj, "args"),
        ttl_s=obj.get("ttl"),
    )


def peek_command_id(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> str | None:
    """The ``id`` of a command payload that :func:`decode_command` refused, if it has a
    usable one, so the gateway can still answer ``ok=false`` (e.g. to a command name a
    newer cloud sent) instead of leaving the sender to time out."""
    try:
        obj = parse(payload, max_bytes)
        return check_token("id", obj["id"], ID_MAX)
    except (KeyError, ValueError):  # WireError is a ValueError
        return None


def encode_ack(ack: CommandAck) -> bytes:
    d: dict[str, object] = {"v": VERSION, "id": ack.id, "ok": ack.ok, "ts": ack.ts_ms}
    _put(d, "result", ack.result)
    _put(d, "error", ack.error)
    return dumps(d)


def decode_ack(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> CommandAck:
    obj = parse(payload, max_bytes)
    check_keys(obj, _ACK_KEYS, "")
    return CommandAck(
        required(obj, "id", ""),
        required(obj, "ok", ""),
        required(obj, "ts", ""),
        result=obj.get("result"),
        error=obj.get("error"),
    )
