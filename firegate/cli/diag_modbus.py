"""``firegate diag modbus``: read one Modbus device on the bench or in the field.

A technician's tool: open the RS-485 adapter (``--port``) or a Modbus TCP gateway (``--host``),
read one device (``--unit``) through a register map (``--profile``, or the device's own map and
channels from the gateway config, ``--config``) or raw registers, coils or
discrete inputs (``--register holding|input|coil|discrete_input --address --count``: FC3, FC4,
FC1, FC2), and see the decoded values with their units and whether they are plausible, the
status bits, the contacts with their meaning and whether each is in its normal state (a DI
module's channels raw, or as assigned with ``--channel 1=valve:3F riser``), the raw registers
and bits, and - when it goes wrong - why: no answer, an exception code with its meaning, a port
that will not open. ``--json`` prints one JSON object per read for scripts; ``--watch`` repeats
until Ctrl-C.

Exit status: 0 every read answered, 1 the (last) read failed, 2 bad options or the port cannot
be opened. pymodbus is imported inside the command so the ``firegate`` tree builds fast.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from protocols.registers import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    PROFILES,
    BitBlock,
    BitTable,
    Channel,
    ChannelError,
    DeviceProfile,
    Meaning,
    PointSpec,
    ReadBlock,
    RegisterType,
)

if TYPE_CHECKING:
    from edge.drivers.modbus_adapter import BusClient, ReadResult

__all__ = ["register"]

_HINTS = {
    "timeout": "check the unit address, baud rate and parity, A/B wiring and termination",
    "exception_1": "the device does not support this function: try another --register table "
                   "(coils and discrete inputs are separate tables)",
    "exception_2": "the device has no register there: wrong profile or address?",
    "exception_11": "the TCP gateway got no answer from the device behind it",
}


def register(app: typer.Typer) -> None:
    """Add the ``modbus`` command to the ``firegate diag`` group."""
    app.command("modbus", no_args_is_help=True)(modbus)


@dataclass
class _Round:
    """One read of the device: every block, decoded."""

    reads: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    values: dict[str, float | frozenset[str]] = field(default_factory=dict)
    contacts: dict[str, bool] = field(default_factory=dict)  # logical states
    channels: dict[int, bool] = field(default_factory=dict)  # a bank's raw bits
    elapsed_ms: float = 0.0


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(2)


def _load_profiles(path: Path) -> dict[str, DeviceProfile]:
    from common.config import ConfigError, Table
    from edge.config.modbus import parse_modbus_profiles

    try:
        document = tomllib.loads(path.read_text("utf-8"))
        return parse_modbus_profiles(Table(document, base_dir=path.parent))
    except (OSError, tomllib.TOMLDecodeError, ConfigError) as exc:
        raise _fail(f"{path}: {exc}") from None


def _configured(path: Path, port: str | None, host: str | None, tcp_port: int, unit: int
                ) -> DeviceProfile | None:
    """The map of the device the gateway config has at ``unit`` on this port or host, with its
    channels and descriptions as the agent applies them; None if it has no such device."""
    from common.config import ConfigError, Table
    from edge.config.modbus import parse_modbus_buses, parse_modbus_profiles

    try:
        root = Table(tomllib.loads(path.read_text("utf-8")), base_dir=path.parent)
        buses = parse_modbus_buses(root.tables("modbus"), parse_modbus_profiles(root))
    except (OSError, tomllib.TOMLDecodeError, ConfigError) as exc:
        raise _fail(f"{path}: {exc}") from None
    for bus in buses:
        here = (bus.port == port) if port is not None else (
            bus.host == host and bus.tcp_port == tcp_port)
        for d in bus.devices if here else ():
            if d.unit == unit:
                return d.profile
    return None


def modbus(
    unit: Annotated[int, typer.Option("--unit", min=1, max=247,
                                      help="Modbus device address (1-247).")],
    port: Annotated[str | None, typer.Option(
        "--port", metavar="DEVICE", help="Serial device of the RS-485 line (Modbus RTU).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Modbus TCP host.")] = None,
    tcp_port: Annotated[int, typer.Option("--tcp-port", min=1, max=65535)] = 502,
    baud: Annotated[int, typer.Option("--baud", min=1200)] = 9600,
    parity: Annotated[str, typer.Option("--parity", help="N, E or O.")] = "N",
    stopbits: Annotated[int, typer.Option("--stopbits", min=1, max=2)] = 1,
    profile: Annotated[str | None, typer.Option(
        "--profile", help=f"Register map: {', '.join(PROFILES)} or a custom one "
                          f"(--config).")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", metavar="FILE", help="Gateway config: its [modbus_profiles], and the map "
                                         "and channels of the device it has at --unit on this "
                                         "--port/--host (then --profile may be left out).")
    ] = None,
    register_type: Annotated[str | None, typer.Option(
        "--register", help="Raw read instead of a profile: holding (FC3), input (FC4), coil "
                           "(FC1) or discrete_input (FC2).")] = None,
    address: Annotated[int, typer.Option("--address", min=0, max=65535,
                                         help="Raw read: first address (0-based).")] = 0,
    count: Annotated[int, typer.Option("--count", min=1, max=MAX_READ_BITS,
                                       help="Raw read: registers (1-125) or bits "
                                            "(1-2000).")] = 1,
    channel: Annotated[list[str] | None, typer.Option(
        "--channel", metavar="N=MEANING[:TEXT]",
        help="With --profile: what channel N means, as in the gateway config "
             "(1=valve:3F riser). Repeatable.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.05, max=10.0,
                                           help="Seconds to wait for an answer.")] = 0.5,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per read.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Repeat until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.05,
                                            help="Seconds between reads with --watch.")] = 1.0,
    reads: Annotated[int | None, typer.Option(
        "--reads", min=1, help="Stop after this many reads (default 1, or unlimited with "
                               "--watch).")] = None,
) -> None:
    """Read one Modbus device and show decoded values, status bits and raw registers."""
    if (port is None) == (host is None):
        raise _fail("give --port DEVICE (Modbus RTU) or --host HOST (Modbus TCP)")
    if parity not in ("N", "E", "O"):
        raise _fail(f"--parity: must be N, E or O, got {parity!r}")
    configured = (_configured(config, port, host, tcp_port, unit)
                  if config is not None and register_type is None else None)
    if profile is None and register_type is None and configured is not None:
        profile = configured.key  # the device as the gateway config has it
    if (profile is None) == (register_type is None):
        where = f" ({config} has no device {unit} on this bus)" if config is not None else ""
        raise _fail(f"give --profile KEY, or --register holding|input|coil|discrete_input with "
                    f"--address/--count{where}")
    chosen: DeviceProfile | None = None
    blocks: list[ReadBlock | BitBlock]
    if profile is not None:
        known = {**PROFILES, **(_load_profiles(config) if config else {})}
        if profile not in known:
            raise _fail(f"--profile: unknown profile {profile!r}; known: "
                        f"{', '.join(sorted(known))}")
        base = configured if configured is not None and configured.key == profile \
            else known[profile]
        chosen = _assign(base, channel or [])
        blocks = [*chosen.read_blocks(), *chosen.bit_blocks()]
        bank = chosen.bank
        if bank is not None:  # every channel of the module, assigned or not, in one read
            blocks = [b for b in blocks if not (
                isinstance(b, BitBlock) and b.table is bank.table and bank.first <= b.start
                and b.start + b.count <= bank.first + bank.count)]
            blocks.append(BitBlock(bank.table, bank.first, bank.count))
    else:
        tables = [*(r.value for r in RegisterType), *(b.value for b in BitTable)]
        if register_type not in tables:
            raise _fail(f"--register: must be {', '.join(tables)}, got {register_type!r}")
        if channel:
            raise _fail("--channel: only with --profile")
        if address + count > 0x10000:
            raise _fail("--address + --count: past address 65535")
        if register_type in ("holding", "input"):
            if count > MAX_READ_REGISTERS:
                raise _fail(f"--count: at most {MAX_READ_REGISTERS} registers per read "
                            f"(Modbus V1.1b3 §6.3), got {count}")
            blocks = [ReadBlock(RegisterType(register_type), address, count)]
        else:
            blocks = [BitBlock(BitTable(register_type), address, count)]

    from edge.drivers.modbus_adapter import (
        BusClient,
        SerialEndpoint,
        TcpEndpoint,
        quiet_pymodbus_logging,
    )

    quiet_pymodbus_logging()  # every failure is shown here, typed, with its meaning
    endpoint = (TcpEndpoint(host, tcp_port) if host is not None
                else SerialEndpoint(str(port), baud, parity, 8, stopbits))
    client = BusClient(endpoint, timeout_s=timeout, gap_s=0.005)
    limit = reads if reads is not None else (None if watch else 1)
    try:
        ok = asyncio.run(_session(client, unit, chosen, blocks, limit, interval, json_out))
    except KeyboardInterrupt:
        ok = True
    if not ok:
        raise typer.Exit(1)


def _assign(profile: DeviceProfile, specs: list[str]) -> DeviceProfile:
    """``--channel N=MEANING[:TEXT]`` applied to a profile."""
    assigned: dict[int, Channel] = {}
    meanings = ", ".join(m.value for m in Meaning)
    for spec in specs:
        number, sep, rest = spec.partition("=")
        head, colon, text = rest.partition(":")
        if not sep or not number.isdigit() or number.startswith("0"):
            raise _fail(f"--channel: expected N=MEANING[:TEXT], e.g. 1=valve:3F riser, "
                        f"got {spec!r}")
        meaning = next((m for m in Meaning if m.value == head.strip()), None)
        if meaning is None and head.strip():
            raise _fail(f"--channel {number}: unknown meaning {head.strip()!r}; meanings: "
                        f"{meanings}")
        assigned[int(number)] = Channel(meaning, text.strip()[:64] if colon else None)
    try:
        return profile.with_channels(assigned)
    except ChannelError as exc:
        raise _fail(f"--channel: {exc}") from None


async def _session(client: BusClient, unit: int, profile: DeviceProfile | None,
                   blocks: list[ReadBlock | BitBlock], limit: int | None, interval: float,
                   json_out: bool) -> bool:
    from edge.drivers.modbus_adapter import OpenError

    try:
        await client.open()
    except OpenError as exc:
        if json_out:
            print(json.dumps({"ok": False, "error": "open", "detail": str(exc)}), flush=True)
        raise _fail(str(exc)) from None
    ok, done = True, 0
    try:
        while limit is None or done < limit:
            if done:
                await asyncio.sleep(interval)
            result = await _read(client, unit, profile, blocks)
            ok = not result.errors
            done += 1
            if json_out:
                print(json.dumps(_as_json(client, unit, profile, result), ensure_ascii=False),
                      flush=True)
            else:
                _show(client, unit, profile, result)
    finally:
        client.close()
    return ok


async def _read(client: BusClient, unit: int, profile: DeviceProfile | None,
                blocks: list[ReadBlock | BitBlock]) -> _Round:
    from edge.drivers.modbus_adapter import Bits, Registers

    result = _Round()
    start = time.perf_counter()
    for block in blocks:
        table = block.table if isinstance(block, BitBlock) else block.register_type
        where = {"register": table.value, "start": block.start, "count": block.count}
        reply = await client.read(table, block.start, block.count, unit)
        error = _error(reply)
        if error is not None:
            result.errors.append({**where, **error})
            continue
        if isinstance(reply, Bits):
            result.reads.append({**where, "bits": [int(b) for b in reply.values]})
            bank = profile.bank if profile is not None else None
            if bank is not None and isinstance(block, BitBlock) and bank.table is block.table:
                for n in range(1, bank.count + 1):
                    rel = bank.address(n) - block.start
                    if 0 <= rel < block.count:
                        result.channels[n] = reply.values[rel]
        elif isinstance(reply, Registers):
            result.reads.append({**where, "registers": list(reply.values)})
        else:  # pragma: no cover - _error answered every other kind
            continue
        if profile is not None:
            if isinstance(reply, Registers) and isinstance(block, ReadBlock):
                result.values.update(profile.decode_block(block, reply.values))
            result.contacts.update(profile.decode_bits(block, reply.values))
    result.elapsed_ms = (time.perf_counter() - start) * 1000.0
    return result


def _error(reply: ReadResult) -> dict[str, Any] | None:
    from edge.drivers.modbus_adapter import Bits, ExceptionReply, LinkError, NoAnswer, Registers

    if isinstance(reply, Registers | Bits):
        return None
    if isinstance(reply, ExceptionReply):
        return {"error": "exception", "code": reply.code, "meaning": reply.meaning,
                "hint": _HINTS.get(f"exception_{reply.code}")}
    if isinstance(reply, NoAnswer):
        return {"error": "timeout", "detail": reply.detail, "hint": _HINTS["timeout"]}
    kind = "link" if isinstance(reply, LinkError) else "bad_reply"
    return {"error": kind, "detail": reply.detail}


def _points(profile: DeviceProfile, values: dict[str, float | frozenset[str]]
            ) -> list[tuple[PointSpec, float]]:
    return [(p, v) for p in profile.points if isinstance(v := values.get(p.name), float)]


def _as_json(client: BusClient, unit: int, profile: DeviceProfile | None, r: _Round
             ) -> dict[str, Any]:
    out: dict[str, Any] = {"ts_ms": time.time_ns() // 1_000_000, "endpoint": str(client.endpoint),
                           "unit": unit, "ok": not r.errors,
                           "elapsed_ms": round(r.elapsed_ms, 1)}
    if profile is not None:
        out["profile"] = profile.key
        out["points"] = {p.name: {"value": v, "unit": p.unit.value, "min": p.minimum,
                                  "max": p.maximum, "in_range": p.in_range(v)}
                         for p, v in _points(profile, r.values)}
        out["status"] = {w.name: sorted(bits) for w in profile.status_words
                         if isinstance(bits := r.values.get(w.name), frozenset)}
        out["contacts"] = {
            b.name: {"meaning": b.meaning.value, "channel": b.channel,
                     "state": b.state_name(state), "normal": b.state_name(b.normal_state),
                     "raw": int(b.raw(state)), "event": b.event_type.value,
                     "abnormal": b.is_abnormal(state), "description": b.description}
            for b in profile.bit_points if (state := r.contacts.get(b.name)) is not None}
        if r.channels:
            out["channels"] = {str(n): int(v) for n, v in sorted(r.channels.items())}
    out["reads"] = r.reads
    out["errors"] = [{k: v for k, v in e.items() if v is not None} for e in r.errors]
    return out


def _show(client: BusClient, unit: int, profile: DeviceProfile | None, r: _Round) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    from firegate.textsafe import escaped

    console = Console(highlight=False)
    what = f"{profile.key} ({profile.model})" if profile is not None else "raw registers"
    console.print(f"[bold]unit {unit}[/] · {escaped(what)} · {escaped(client.endpoint)} · "
                  f"{r.elapsed_ms:.0f} ms")
    if profile is not None and (points := _points(profile, r.values)):
        table = RichTable("point", "value", "unit", "range", "plausible")
        for p, v in points:
            good = p.in_range(v)
            table.add_row(p.name, f"{v:.6g}", p.unit.value, f"{p.minimum:g}..{p.maximum:g}",
                          "yes" if good else "[bold red]NO - out of range[/]")
        console.print(table)
        for w in profile.status_words:
            bits = r.values.get(w.name)
            if isinstance(bits, frozenset):
                shown = ", ".join(sorted(bits)) or "none set"
                console.print(f"status {w.name}: {shown}")
    if profile is not None:
        _show_contacts(console, profile, r)
    for read in r.reads:
        if "bits" in read:
            shown = "".join(str(b) for b in read["bits"])
            console.print(f"raw {read['register']} {read['start']}.."
                          f"{read['start'] + read['count'] - 1}: {shown}", soft_wrap=True)
            continue
        regs = ", ".join(f"{read['start'] + i}={v} (0x{v:04X})"
                         for i, v in enumerate(read["registers"]))
        console.print(f"raw {read['register']} {regs}")
    for e in r.errors:
        span = f"{e['register']} {e['start']}..{e['start'] + e['count'] - 1}"
        if e["error"] == "exception":
            text = f"exception {e['code']} ({e['meaning']})"
        else:
            text = f"{e['error']}: {e['detail']}"
        hint = f" - {e['hint']}" if e.get("hint") else ""
        console.print(f"[bold red]{span}: {escaped(text)}[/]{escaped(hint)}")  # from the device


def _show_contacts(console: Any, profile: DeviceProfile, r: _Round) -> None:
    """The contacts with their meaning and state; a module's unassigned channels raw."""
    from rich.table import Table as RichTable

    from firegate.textsafe import escaped

    rows = [(b, state) for b in profile.bit_points
            if (state := r.contacts.get(b.name)) is not None]
    if rows:
        table = RichTable("contact", "channel", "meaning", "state", "normal", "raw", "")
        for b, state in rows:
            bad = b.is_abnormal(state)
            table.add_row(escaped(b.description or b.name),
                          "" if b.channel is None else str(b.channel), b.meaning.value,
                          b.state_name(state), b.state_name(b.normal_state),
                          str(int(b.raw(state))),
                          f"[bold red]{b.event_type.value}[/]" if bad else "ok")
        console.print(table)
    taken = {b.channel for b in profile.bit_points}
    free = {n: v for n, v in r.channels.items() if n not in taken}
    if free:
        console.print("channels (no meaning assigned; --channel N=MEANING): "
                      + "  ".join(f"{n}={int(v)}" for n, v in sorted(free.items())),
                      soft_wrap=True)
