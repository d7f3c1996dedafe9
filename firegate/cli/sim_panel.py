"""``firegate sim panel``: a simulated fire panel UITD speaking GB/T 26875.3.

The first line of output is machine-readable: ``listening pty /dev/pts/N``, ``listening serial
/dev/ttyUSB0``, ``listening tcp HOST:PORT`` or ``dialing tcp HOST:PORT``. Then one line per
scenario action, per link change and per upload sent, resent, confirmed or failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from simulators.panel.ledger import UploadLedger
    from simulators.panel.link import Connection, Transport
    from simulators.panel.scenario import PanelSpec

# CLI shortcuts for common timeline entries: option -> action.
SHORTCUTS = {"fire_alarm_at": "fire_alarm", "fault_at": "fault", "restore_at": "restore",
             "silence_at": "silence", "reset_at": "reset"}
# Ledger records worth a line on the console.
_SHOWN = ("sent", "resent", "confirmed", "failed", "requeued", "answered", "executed", "denied",
          "injected", "damaged", "link_lost", "link_back", "clock_synced", "check_post",
          "initialised")


def register(app: typer.Typer) -> None:
    """Add the ``panel`` command to the ``firegate sim`` group."""
    app.command("panel", no_args_is_help=False)(panel)


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(2)


def _host_port(option: str, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _fail(f"{option}: expected HOST:PORT (port 0..65535), got {text!r}")
    return host, int(port)


def panel(
    pty: Annotated[bool, typer.Option(
        "--pty", help="Serial over a new pty (the default); prints the device the agent "
                      "opens.")] = False,
    port: Annotated[str | None, typer.Option(
        "--port", metavar="DEVICE", help="Serial over an existing port (pyserial), e.g. "
                                         "/dev/ttyUSB0.")] = None,
    tcp_listen: Annotated[str | None, typer.Option(
        "--tcp-listen", metavar="HOST:PORT",
        help="Accept the centre's TCP connection (port 0: any free one).")] = None,
    tcp_connect: Annotated[str | None, typer.Option(
        "--tcp-connect", metavar="HOST:PORT",
        help="Dial the centre over TCP, and redial when the link drops.")] = None,
    link: Annotated[Path | None, typer.Option(
        "--link", metavar="PATH", help="With --pty, also make PATH a symlink to the pty.")] = None,
    scenario: Annotated[Path | None, typer.Option(
        "--scenario", metavar="FILE", help="TOML file; its \\[panel] table is read.")] = None,
    profile: Annotated[str | None, typer.Option(
        "--profile", help="Dialect: standard, hikvision, dahua, handshake, extra-time-labels, "
                          "no-time-labels.")] = None,
    baud: Annotated[int | None, typer.Option("--baud", help="Serial baud rate (9600).")] = None,
    pace: Annotated[bool | None, typer.Option(
        "--pace/--no-pace", help="Write no faster than --baud allows (default: on for serial, "
                                 "off for TCP).")] = None,
    speed: Annotated[float, typer.Option(
        "--speed", help="Scenario seconds per wall-clock second (timeline, timeouts, "
                        "labels).")] = 1.0,
    duration: Annotated[float | None, typer.Option(
        "--duration", help="Stop after this many scenario seconds.")] = None,
    ledger: Annotated[Path | None, typer.Option(
        "--ledger", metavar="FILE", help="Append the ledger to FILE as JSON lines.")] = None,
    confirm_timeout: Annotated[float | None, typer.Option(
        "--confirm-timeout", help="Seconds to wait for a confirm (<= 10).")] = None,
    retries: Annotated[int | None, typer.Option("--retries", help="Resends (3).")] = None,
    periodic: Annotated[float | None, typer.Option(
        "--periodic", help="Upload UITD and system state every N s (0 = off).")] = None,
    check_post_answer: Annotated[str | None, typer.Option(
        "--check-post-answer", metavar="SECONDS|never",
        help="When the operator answers a check-post.")] = None,
    fire_alarm_at: Annotated[list[str] | None, typer.Option(
        metavar="AT[:COMPONENT]", help="Fire alarm at scenario time AT (repeatable; default "
                                       "component: the first).")] = None,
    fault_at: Annotated[list[str] | None, typer.Option(
        metavar="AT[:COMPONENT]", help="Component fault at AT (repeatable).")] = None,
    restore_at: Annotated[list[str] | None, typer.Option(
        metavar="AT[:COMPONENT]", help="Component back to normal at AT, fire alarms excepted "
                                       "(repeatable).")] = None,
    silence_at: Annotated[list[str] | None, typer.Option(
        metavar="AT", help="Operator silences the panel at AT (repeatable).")] = None,
    reset_at: Annotated[list[str] | None, typer.Option(
        metavar="AT", help="Operator resets the panel at AT (repeatable).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the first line and the "
                                                              "summary.")] = False,
    list_actions: Annotated[bool, typer.Option(
        "--list-actions", help="Print the scenario actions and exit.")] = False,
) -> None:
    """Simulate a fire panel's UITD: uploads alarms, answers the centre (GB/T 26875.3)."""
    from common.config import ConfigError
    from simulators.panel.timeline import ACTIONS

    if list_actions:
        for name, spec in ACTIONS.items():
            print(f"{name:<18} {spec.target:<15} {spec.help}")
        return
    if sum((pty, port is not None, tcp_listen is not None, tcp_connect is not None)) > 1:
        raise _fail("choose one of --pty, --port, --tcp-listen, --tcp-connect")
    if not speed > 0:
        raise _fail("--speed: must be > 0")
    shortcuts = {"fire_alarm_at": fire_alarm_at, "fault_at": fault_at,
                 "restore_at": restore_at, "silence_at": silence_at, "reset_at": reset_at}
    try:
        cfg = _config(scenario, profile=profile, baud=baud, confirm_timeout=confirm_timeout,
                      retries=retries, periodic=periodic, check_post_answer=check_post_answer,
                      shortcuts=shortcuts)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    transport = _transport(port, tcp_listen, tcp_connect, cfg.baud, link)
    serial_line = tcp_listen is None and tcp_connect is None
    paced = serial_line if pace is None else pace
    from simulators.panel.ledger import UploadLedger

    try:
        book = UploadLedger(ledger)
    except OSError as exc:
        raise _fail(f"--ledger: {exc}") from None
    try:
        asyncio.run(_run(cfg, transport, book, speed=speed, pace=cfg.baud if paced else None,
                         duration=duration, quiet=quiet))
    except OSError as exc:
        raise _fail(f"cannot open {transport.kind} {transport.address}: {exc}") from None
    finally:
        book.close()


def _config(path: Path | None, *, profile: str | None, baud: int | None,
            confirm_timeout: float | None, retries: int | None, periodic: float | None,
            check_post_answer: str | None, shortcuts: dict[str, list[str] | None]) -> PanelSpec:
    """The scenario file (or defaults), overridden by flags validated as scenario keys."""
    from common.config import ConfigError
    from simulators.panel.scenario import (
        PanelSpec,
        load_scenario,
        parse_event_option,
        parse_scenario,
    )

    cfg = load_scenario(path) if path is not None else PanelSpec()
    flags: dict[str, Any] = {}
    if profile is not None:
        flags["profile"] = profile
    if baud is not None:
        flags["baud"] = baud
    if confirm_timeout is not None:
        flags["confirm_timeout"] = confirm_timeout
    if retries is not None:
        flags["retries"] = retries
    if periodic is not None:
        flags["periodic_interval"] = periodic
    if check_post_answer is not None:
        flags["check_post_answer"] = (check_post_answer if check_post_answer == "never"
                                      else _float(check_post_answer, "--check-post-answer"))
    for key, value in flags.items():  # the scenario's rules, the flag's name in errors
        try:
            checked = parse_scenario({key: value})
        except ConfigError as exc:
            raise ConfigError(_OPTION[key], exc.message) from None
        cfg = replace(cfg, **{key: getattr(checked, key)})
    events = list(cfg.events)
    for option, texts in shortcuts.items():
        for text in texts or []:
            events.append(parse_event_option(cfg, SHORTCUTS[option], text,
                                             "--" + option.replace("_", "-")))
    return replace(cfg, events=tuple(sorted(events, key=lambda e: e.at)))


_OPTION = {"profile": "--profile", "baud": "--baud", "confirm_timeout": "--confirm-timeout",
           "retries": "--retries", "periodic_interval": "--periodic",
           "check_post_answer": "--check-post-answer"}


def _float(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _fail(f"{option}: must be seconds or \"never\", got {text!r}") from None


def _transport(port: str | None, tcp_listen: str | None, tcp_connect: str | None, baud: int,
               link: Path | None) -> Transport:
    from simulators.panel.link import (
        PtyTransport,
        SerialTransport,
        TcpConnectTransport,
        TcpListenTransport,
    )

    if port is not None:
        return SerialTransport(port, baud)
    if tcp_listen is not None:
        return TcpListenTransport(*_host_port("--tcp-listen", tcp_listen))
    if tcp_connect is not None:
        return TcpConnectTransport(*_host_port("--tcp-connect", tcp_connect))
    return PtyTransport(link)


async def _run(cfg: PanelSpec, transport: Transport, ledger: UploadLedger, *, speed: float,
               pace: int | None, duration: float | None, quiet: bool) -> None:
    from simulators.panel.clock import ScaledClock
    from simulators.panel.engine import UitdEngine
    from simulators.panel.runner import Panel
    from simulators.panel.timeline import TimelineEvent

    engine = UitdEngine(cfg, ledger=ledger)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    def on_event(event: TimelineEvent) -> None:
        say(f"event {event}")

    def on_record(record: dict[str, Any]) -> None:
        if record["event"] in _SHOWN:
            extra = {k: v for k, v in record.items()
                     if k not in ("t", "event", "entry", "action", "type_mark", "summary")}
            what = [f"#{record['entry']} {record['summary']}"] if "entry" in record else []
            say(" ".join([f"{record['event']} t={record['t']:g}", *what,
                          *(f"{k}={v}" for k, v in extra.items())]))

    def on_connect(conn: Connection | None) -> None:
        say(f"connected {conn.name}" if conn is not None else "disconnected")

    engine.on_event = on_event
    engine.ledger.on_record = on_record
    clock = ScaledClock(speed)
    panel = Panel(engine, transport, clock, pace=pace)
    panel.on_connect = on_connect
    await panel.start()  # opens the port or socket: an OSError here ends with status 2
    verb = "dialing" if transport.kind == "tcp-connect" else "listening"
    kind = "tcp" if transport.kind.startswith("tcp") else transport.kind
    print(f"{verb} {kind} {transport.address}", flush=True)
    say(f"uitd {cfg.uitd_address:#x} profile {cfg.profile.name} centre {cfg.centre_address:#x}"
        + (f" baud {pace} paced" if pace else ""))
    for c in engine.config.components:
        say(f"component {c.id} {c.system_type}/{c.system_address} type {c.type} "
            f"address {c.address.value} \"{c.description}\"")
    if cfg.events:
        say(f"scenario: {len(cfg.events)} events, speed x{speed:g}")
    try:
        while not stop.is_set():
            if duration is not None and clock.now() >= duration:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):  # not wait_for: see runner.Panel._drive
                    await stop.wait()
    finally:
        await panel.stop()
        counts = engine.ledger.counts
        print(f"stopped: {counts['queued']} uploads, {counts['confirmed']} confirmed, "
              f"{counts['failed']} failed, {engine.pending} pending", flush=True)
        noted = {k: v for k, v in sorted(engine.stats.items())
                 if k.startswith(("injected_", "decode_", "unmatched"))}
        if noted:
            say("counters: " + " ".join(f"{k}={v}" for k, v in noted.items()))
