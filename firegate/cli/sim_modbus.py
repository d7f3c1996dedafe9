"""``firegate sim modbus``: simulated Modbus RTU/TCP field devices on one bus.

pymodbus (through :mod:`simulators.modbus.server`) and even asyncio are imported inside the
command, so building the ``firegate`` command tree stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from simulators.modbus.scenario import Scenario

DEFAULT_TCP = "127.0.0.1:5020"
TICK = 0.1  # seconds between applying due scenario events (values are computed per request)


def register(app: typer.Typer) -> None:
    """Add the ``modbus`` command to the ``firegate sim`` group."""
    app.command("modbus", no_args_is_help=False)(modbus)


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(2)


def _parse_tcp(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _fail(f"--tcp: expected HOST:PORT (port 0..65535, 0 = any free), got {text!r}")
    return host, int(port)


def _scenario(path: Path | None, devices: list[str], seed: int | None,
              noise: float | None) -> Scenario:
    from common.config import ConfigError
    from simulators.modbus.scenario import (
        Scenario,
        default_devices,
        load_scenario,
        parse_device_option,
    )

    try:
        base = load_scenario(path) if path is not None else Scenario(())
        extra = [parse_device_option(text) for text in devices]
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    scenario = base.with_devices(extra)
    if not scenario.devices:
        scenario = scenario.with_devices(default_devices())
    if noise is not None and noise < 0:
        raise _fail("--noise: must be >= 0")
    return Scenario(scenario.devices, scenario.events,
                    scenario.noise if noise is None else noise,
                    scenario.seed if seed is None else seed)


def modbus(
    tcp: Annotated[str | None, typer.Option(
        "--tcp", metavar="HOST:PORT",
        help=f"Serve Modbus TCP (the default, on {DEFAULT_TCP}; port 0 picks a free one).")] = None,
    rtu: Annotated[bool, typer.Option(
        "--rtu", help="Serve Modbus RTU on a new pty pair and print the device the client "
                      "opens.")] = False,
    port: Annotated[str | None, typer.Option(
        "--port", metavar="DEVICE",
        help="Serve Modbus RTU on an existing serial device, e.g. a USB RS-485 "
             "adapter.")] = None,
    baud: Annotated[int, typer.Option("--baud", help="RTU baud rate.")] = 9600,
    pace: Annotated[bool, typer.Option(
        "--pace/--no-pace", help="With --rtu, deliver bytes no faster than a real line at "
                                 "--baud.")] = True,
    link: Annotated[Path | None, typer.Option(
        "--link", metavar="PATH", help="With --rtu, also make PATH a symlink to the pty.")] = None,
    scenario: Annotated[Path | None, typer.Option(
        "--scenario", metavar="FILE", help="TOML file; its \\[modbus] table is read.")] = None,
    device: Annotated[list[str] | None, typer.Option(
        "--device", metavar="ID:PROFILE[=INITIAL]",
        help="Add a device (repeatable), e.g. 1:pressure-a=0.35. Without devices: one of each "
             "profile.")] = None,
    speed: Annotated[float, typer.Option(
        "--speed", help="Scenario seconds per wall-clock second.")] = 1.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Noise random seed.")] = None,
    noise: Annotated[float | None, typer.Option(
        "--noise", help="Noise scale (0 = exact values; default from the scenario, "
                        "else 1).")] = None,
    duration: Annotated[float | None, typer.Option(
        "--duration", help="Stop after this many scenario seconds.")] = None,
    list_profiles: Annotated[bool, typer.Option(
        "--list-profiles", help="Print the built-in register maps and exit.")] = False,
) -> None:
    """Simulate Modbus field devices (pressure, level, electrical fire) on one bus."""
    if list_profiles:
        _print_profiles()
        return
    if sum((tcp is not None, rtu, port is not None)) > 1:
        raise _fail("choose one of --tcp, --rtu, --port")
    if not speed > 0:
        raise _fail("--speed: must be > 0")
    if baud <= 0:
        raise _fail("--baud: must be > 0")
    spec = _scenario(scenario, device or [], seed, noise)
    address = None if rtu or port else _parse_tcp(tcp or DEFAULT_TCP)
    import asyncio

    try:
        asyncio.run(_serve(spec, address, rtu=rtu, port=port, baud=baud, pace=pace,
                           link=str(link) if link else None, speed=speed, duration=duration))
    except OSError as exc:
        raise _fail(f"cannot serve: {exc}") from None


async def _serve(spec: Scenario, address: tuple[str, int] | None, *, rtu: bool,
                 port: str | None, baud: int, pace: bool, link: str | None, speed: float,
                 duration: float | None) -> None:
    import asyncio
    import contextlib
    import signal

    from simulators.modbus.model import ScaledClock, TimelineEvent
    from simulators.modbus.server import serve_rtu, serve_rtu_pty, serve_tcp

    clock = ScaledClock(speed)
    bus = spec.build(clock)
    if address is not None:
        server = serve_tcp(bus, *address)
    elif rtu:
        server = serve_rtu_pty(bus, baud, pace=pace, link=link)
    else:
        server = serve_rtu(bus, port or "", baud)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    def show(event: TimelineEvent) -> None:
        print(f"event {event} ({bus.devices[event.device].name})", flush=True)

    bus.on_event = show
    async with server as running:
        print(f"listening {running.kind} {running.address}", flush=True)
        for d in bus.devices.values():
            print(f"device {d.id} {d.profile.key} {d.name}", flush=True)
        if bus.pending:
            print(f"scenario: {bus.pending} events, speed x{speed:g}", flush=True)
        while not stop.is_set():
            bus.advance()  # requests apply due events too; this prints them on time when idle
            if duration is not None and clock.now() >= duration:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK)
        stats = running.stats
        print(f"stopped: {stats.sent} replies sent, {stats.dropped} dropped "
              f"(silenced or unknown ids)", flush=True)


def _print_profiles() -> None:
    from protocols.registers import PROFILES, PointSpec

    row = "  {:<18} {:<8} {:<7} {:<11} {:<6} {:<6} {:<4} {}"
    for profile in PROFILES.values():
        print(f"{profile.key}: {profile.model}")
        print(row.format("field", "table", "addr", "type", "scale", "offset", "unit",
                         "range / bit"))
        for f in profile.fields:
            if isinstance(f, PointSpec):
                kind = f"{f.data_type} {f.word_order}" if f.register_count > 1 else str(f.data_type)
                print(row.format(f.name, f.register_type, f"0x{f.address:04X}", kind,
                                 f"{f.scale:g}", f"{f.offset:g}", f.unit,
                                 f"{f.minimum:g}..{f.maximum:g}"))
            else:
                for bit, name in sorted(f.bits.items()):
                    print(row.format(f"{f.name}.{bit}", f.register_type, f"0x{f.address:04X}",
                                     "bit", "", "", "", name))
        for c in profile.bit_points:  # contacts: logical 0/1 states, "!" = inverted wiring
            where = "" if c.bit is None else f".{c.bit}"
            table = "discrete" if c.table == "discrete_input" else c.table
            print(row.format(c.name, table, f"0x{c.address:04X}{where}",
                             "bit!" if c.invert else "bit", "", "", "",
                             f"{c.meaning} {'/'.join(c.spec.states)}, "
                             f"normal {c.state_name(c.normal_state)}"))
        if profile.bank is not None:
            bank = profile.bank
            print(row.format(f"ch1..ch{bank.count}", "discrete" if bank.table == "discrete_input"
                             else bank.table, f"0x{bank.first:04X}", "bit",
                             "", "", "", "open/closed contacts, meaning set per channel"))
        print()
